"""``AsyncClosing``: a resource used as ``async with`` that is released by its ``close()``."""

from __future__ import annotations

from typing import Self


class AsyncClosing:
    """Base of clients and publishers: ``async with`` gives the object, leaving awaits ``close()``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release what the object holds (subclasses say what)."""
        raise NotImplementedError
