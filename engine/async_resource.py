"""``AsyncResource``: the one ``async with`` protocol of everything that holds connections.

A resource is opened by ``open`` (nothing to do by default) and released by
``aclose``; ``async with resource`` is ``open`` on entry and ``aclose`` on
exit, whatever the exit. Subclasses write those two methods, never
``__aenter__`` / ``__aexit__``.

Loop-neutral: the base awaits only the subclass's own methods, so the same
class serves the trio adapters (transport, SQL, Redis) and the asyncio ones
(the model registry). What a cancelled ``aclose`` does (shielded or not) is
each subclass's to say.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource(abc.ABC):
    """Base of a resource used as ``async with``: ``open`` on entry, ``aclose`` on exit."""

    __slots__ = ()

    async def open(self) -> None:  # noqa: B027 - an optional hook, empty on purpose
        """Acquire what the resource needs before use; most resources need nothing."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release everything the resource holds; safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
