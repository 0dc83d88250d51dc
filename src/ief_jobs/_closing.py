"""The one ``async with`` shape every closable object here shares."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncClosing"]


class AsyncClosing:
    """
    ``async with obj`` gives *obj* and awaits ``obj.aclose()`` on the way out,
    whatever happened inside. A subclass defines ``aclose`` (and overrides
    ``__aenter__`` where entering has work to do).
    """

    __slots__ = ()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError
