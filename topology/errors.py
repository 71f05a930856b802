"""The taskq exception tree, split by what the caller does next.

::

    TaskqError                      root: catch this to catch everything taskq raises
    ├── SettingsError               fix the environment variable it names
    ├── TopologyError               fix the topology file or the broker's state
    │   ├── TopologyFileError       the file is invalid: it names the file, key and fix
    │   └── TopologyConflictError   the live broker holds an incompatible declaration
    ├── ContractError               a message is not a valid envelope: dead-letter, never retry
    └── BrokerError                 talking to RabbitMQ failed
        ├── BrokerUnavailableError  the broker cannot be reached now: retry later (HTTP 503)
        ├── ManagementApiError      the management API failed or answered garbage
        └── PublishError            a publish was not confirmed (see producers.errors)

Foreign exceptions (aiormq, aiohttp, pydantic, yaml) are translated at the seam
where they arise, with ``raise ... from exc`` so the cause is kept.
"""

from __future__ import annotations


class TaskqError(Exception):
    """Root of every exception taskq raises on purpose."""


class SettingsError(TaskqError):
    """An environment setting is missing or invalid; the message names the variable."""


class TopologyError(TaskqError):
    """The topology cannot be used as declared."""


class TopologyFileError(TopologyError):
    """The topology file is invalid; the message names the file, the key and the fix."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid topology file {path}:\n{lines}")


class TopologyConflictError(TopologyError):
    """The broker already holds a declaration that RabbitMQ would refuse to change."""


class ContractError(TaskqError):
    """A message body or its properties do not form a valid taskq envelope."""


class BrokerError(TaskqError):
    """An operation against RabbitMQ failed."""


class BrokerUnavailableError(BrokerError):
    """RabbitMQ cannot be reached right now; retrying later may succeed."""


class ManagementApiError(BrokerError):
    """The RabbitMQ management API failed, timed out or answered something unusable."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)
