"""``Acks``: one multiple ack per run of finished tags at the head, the rest one by one, nacks first."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.acks import Acks


@dataclass(eq=False)
class Channel:
    """A channel twin that records the frames sent on it."""

    sent: list[tuple[str, int, bool]] = field(default_factory=list)
    is_closed: bool = False

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        self.sent.append(("nack", tag, requeue))

    async def basic_reject(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        self.sent.append(("reject", tag, requeue))


def acks_for(channel: Channel, tags: range) -> Acks:
    acks = Acks()
    for tag in tags:
        acks.received(channel, tag)  # type: ignore[arg-type]
    return acks


async def test_a_run_at_the_head_is_one_multiple_ack() -> None:
    channel = Channel()
    acks = acks_for(channel, range(1, 6))
    await acks.settle([(channel, 1), (channel, 2), (channel, 3)])  # type: ignore[list-item]
    assert channel.sent == [("ack", 3, True)]
    await acks.settle([(channel, 5), (channel, 4)])  # type: ignore[list-item]
    assert channel.sent[1:] == [("ack", 5, True)]


async def test_tags_behind_an_open_one_are_acked_alone() -> None:
    channel = Channel()
    acks = acks_for(channel, range(1, 6))
    await acks.settle([(channel, 3), (channel, 5)])  # type: ignore[list-item]
    assert channel.sent == [("ack", 3, False), ("ack", 5, False)]
    await acks.settle([(channel, 1), (channel, 2), (channel, 4)])  # type: ignore[list-item]
    # 3 and 5 are settled already: the run from the head reaches 4.
    assert channel.sent[2:] == [("ack", 4, True)]


async def test_nacks_and_rejects_go_first_and_a_multiple_ack_never_covers_an_open_tag() -> None:
    channel = Channel()
    acks = acks_for(channel, range(1, 7))
    await acks.settle(
        [(channel, 1), (channel, 4)],  # type: ignore[list-item]
        requeue=[(channel, 2)],  # type: ignore[list-item]
        reject=[(channel, 3)],  # type: ignore[list-item]
    )
    assert channel.sent == [("nack", 2, True), ("reject", 3, False), ("ack", 4, True)]
    await acks.settle([(channel, 6)])  # type: ignore[list-item]
    assert channel.sent[3:] == [("ack", 6, False)]  # 5 is still open


async def test_a_closed_channel_is_forgotten() -> None:
    channel = Channel()
    acks = acks_for(channel, range(1, 3))
    channel.is_closed = True
    await acks.settle([])
    await acks.settle([(channel, 1)])  # type: ignore[list-item]
    assert channel.sent == []  # its deliveries went back to the queue with it
