"""The handler SDK: ``@handler("email")`` on a function taking a typed payload and a context."""

# A handler only returns (success; the value is the job's result) or raises: Retry, Permanent,
# or any other exception, which the group's policy retries. The dispatcher decides the rest.

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from loguru import logger as root_logger
from pydantic import TypeAdapter, ValidationError

from jobstore.model import JobRecord
from jobstore.workflows import StepOutcome
from topology import routing
from topology.errors import ContractError, TaskqError

HandlerFn = Callable[..., Any]
# The decorated function's own type, kept: handlers stay typed under ``mypy --strict``.
F = TypeVar("F", bound=HandlerFn)


# Retry and Permanent steer a job: control flow rather than errors, hence no suffix.
class Retry(TaskqError):
    """Raised by a handler to ask for another attempt, after ``delay`` seconds if given."""

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        self.delay = delay
        super().__init__(reason)


class Permanent(TaskqError):
    """Raised by a handler when no further attempt can succeed: the job goes to the DLQ at once."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler knows about the job it runs, besides its payload."""

    job_id: str
    job_type: str
    attempt: int
    max_attempts: int
    deadline: datetime
    idempotency_key: str
    correlation_id: str | None = None
    # Reads a stored job by id (None when unknown), for a handler whose payload names
    # another job: the callback handler checks the URL it is asked to call against it.
    lookup_job: Callable[[str], Awaitable[JobRecord | None]] | None = field(
        default=None, compare=False, repr=False
    )
    workflow_id: str | None = None  # the workflow this job is a step of
    # What the step is given: the previous step of its chain, or every member of its chord
    # (in order), each with its status, result (opened) and error.
    inputs: tuple[StepOutcome, ...] = ()

    @property
    def previous(self) -> Any:
        """Return the result of the chain's previous step (``None`` for a first step, or one that died)."""
        return self.inputs[-1].result if self.inputs else None

    @property
    def results(self) -> list[Any]:
        """Return the result of each member of the chord, in order (``None`` for one that died)."""
        return [outcome.result for outcome in self.inputs]

    @property
    def logger(self) -> Any:
        """Return a logger bound to the job's fields (made on use: most runs never log)."""
        # The field names of telemetry.logs.bind_job, so both kinds of line match.
        fields = {"job_id": self.job_id, "job_type": self.job_type, "attempt": self.attempt}
        if self.correlation_id is not None:
            fields["correlation_id"] = self.correlation_id
        return root_logger.bind(**fields)


@dataclass(frozen=True, slots=True)
class Handler:
    """One registered handler: the job types it takes, its function and its payload type."""

    pattern: str
    fn: HandlerFn
    payload: TypeAdapter[Any]
    timeout: float | None
    depends_on: tuple[str, ...]
    is_async: bool  # a coroutine function; sync ones run in threads

    def parse(self, payload: Any) -> Any:
        """Return the payload as the handler's declared type; ContractError if it does not fit it."""
        try:
            return self.payload.validate_python(payload)
        except ValidationError as exc:
            raise ContractError(
                f"payload does not fit the {self.pattern!r} handler: {exc}"
            ) from exc

    async def call(self, payload: Any, context: JobContext) -> Any:
        """Run the function with the parsed payload and the context; sync ones in a thread."""
        if self.is_async:
            return await self.fn(payload, context)
        return await asyncio.to_thread(self.fn, payload, context)


class HandlerRegistry:
    """Maps job types to handlers; exact types win over patterns, patterns in declaration order."""

    def __init__(self) -> None:
        self._exact: dict[str, Handler] = {}
        self._patterns: list[Handler] = []

    def handler(
        self, job_type: str, *, timeout: float | None = None, depends_on: Sequence[str] = ()
    ) -> Callable[[F], F]:
        """Register the decorated function, taking ``(payload, context)``, for ``job_type`` (a type or a topic pattern)."""

        def register(fn: F) -> F:
            if job_type in self.job_types:
                raise ValueError(f"a handler for {job_type!r} is registered already")
            parameters = list(inspect.signature(fn).parameters.values())
            if len(parameters) != 2:
                raise ValueError(
                    f"{fn.__qualname__} must take (payload, context), it takes {len(parameters)} parameters"
                )
            # The payload's declared type (Any when unannotated) validates what arrives.
            payload = TypeAdapter(typing.get_type_hints(fn).get(parameters[0].name, Any))
            is_async = inspect.iscoroutinefunction(fn)
            built = Handler(job_type, fn, payload, timeout, tuple(depends_on), is_async)
            if routing.is_pattern(job_type):
                self._patterns.append(built)
            else:
                self._exact[job_type] = built
            return fn

        return register

    def copy(self) -> HandlerRegistry:
        """Return a registry with the same handlers, to add more to without changing this one."""
        other = HandlerRegistry()
        other._exact, other._patterns = dict(self._exact), list(self._patterns)
        return other

    def resolve(self, job_type: str) -> Handler | None:
        """Return the handler for ``job_type``, or ``None`` when none takes it."""
        return self._exact.get(job_type) or next(
            (h for h in self._patterns if routing.matches(h.pattern, job_type)), None
        )

    @property
    def job_types(self) -> tuple[str, ...]:
        """Return every registered type and pattern."""
        return (*self._exact, *(h.pattern for h in self._patterns))


default_registry = HandlerRegistry()
"""The registry ``@handler`` fills; workers use it unless given another."""

handler = default_registry.handler
