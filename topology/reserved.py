"""Reserved job types: those only taskq itself, a verified webhook source or a stream source may produce."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from topology import names, routing
from topology.spec import EVENT, StreamSourceSpec, WebhookSourceSpec

TASKQ = "taskq"
"""The producer name of taskq's own jobs (callbacks)."""


def webhook_producer(source: str) -> str:
    """Return the producer name of the webhook source called ``source``."""
    return f"webhook:{source}"


def stream_producer(source: str) -> str:
    """Return the producer name of the stream source called ``source``."""
    return f"stream:{source}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A topic pattern of job types, and the one producer that may submit them."""

    pattern: str
    producer: str
    # The types the producer makes today: what a group's patterns are checked against. taskq
    # reserves its whole namespace at the door but makes only callbacks, so a group may take
    # "#.welcome" (nobody makes "taskq.welcome") but not "#" (it would receive callbacks).
    produced: str

    @property
    def why(self) -> str:
        """Return who alone produces these types, and how they come in, for error messages."""
        if self.producer == TASKQ:
            return (
                "only taskq itself produces taskq.* types (a job's callback is enqueued when "
                "the job ends, and goes to that job's own callback_url)"
            )
        if self.producer.startswith("stream:"):
            source = self.producer.removeprefix("stream:")
            return f"only the stream source {source!r} produces these types, from its Redis stream's entries"
        source = self.producer.removeprefix("webhook:")
        return (
            f"only the webhook source {source!r} produces these types, once a delivery's "
            f"signature is verified (POST /webhooks/{source})"
        )


def reservations(
    webhooks: Iterable[tuple[str, WebhookSourceSpec]],
    streams: Iterable[tuple[str, StreamSourceSpec]] = (),
) -> tuple[Reservation, ...]:
    """Return taskq's own reservation and one per webhook source and per stream source."""
    # A template makes every type of its topic pattern ({event} -> #), and only those.
    patterns = [(s.job.replace(EVENT, "#"), webhook_producer(n)) for n, s in webhooks]
    patterns += [(s.job.replace(EVENT, "#"), stream_producer(n)) for n, s in streams]
    return (
        Reservation("taskq.#", TASKQ, names.CALLBACK_JOB_TYPE),
        *(Reservation(pattern, producer, pattern) for pattern, producer in patterns),
    )


def reserving(reserved: Iterable[Reservation], job_type: str) -> list[Reservation]:
    """Return the reservations that take ``job_type`` (none: any client may submit it)."""
    return [r for r in reserved if routing.matches(r.pattern, job_type)]


def public_overlap(reserved: Iterable[Reservation], pattern: str) -> tuple[Reservation, str] | None:
    """Return a reservation ``pattern`` reaches into without lying inside it, and a shared type."""
    # A group's pattern is reserved (``github.#`` of the group that receives the github
    # source's events) or public, never both: one that takes reserved and public types alike
    # says the reserved ones are for clients too. The file contradicts itself, so it is
    # refused rather than half honoured.
    for reservation in reserved:
        shared = routing.overlap(pattern, reservation.produced)
        if shared is not None and not routing.covers(reservation.produced, pattern):
            return reservation, shared
    return None
