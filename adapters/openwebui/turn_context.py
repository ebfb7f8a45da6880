"""What one ``pipe()`` call hands a turn, and the error that refuses a turn up front.

``TurnContext`` carries the reserved arguments of ``Pipe.pipe()`` that a turn
reads (the user, ``__metadata__``, the chat's tools, the event emitter and
event call) and the seams tests inject (transport, store, files, downloads).
The planner (``turn_plan``) and the runner (``turn``) both read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orpipe.adapters.bridge import StoreFactory, TransportFactory
from orpipe.adapters.openwebui.intake import FileStore, UrlFetcher
from orpipe.adapters.openwebui.tools import EventCall

__all__ = ["Emitter", "PipeError", "TurnContext"]

#: ``__event_emitter__``: sends one event to the chat's browser tabs.
Emitter = Callable[[dict[str, Any]], Awaitable[None]]


class PipeError(Exception):
    """A turn refused before streaming; Open WebUI shows the message as an error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnContext:
    """The reserved arguments of one ``pipe()`` call that a turn uses."""

    user: Mapping[str, Any]
    metadata: Mapping[str, Any]
    emitter: Emitter | None = None
    task: str | None = None
    #: ``__tools__``: the tools the user enabled for this chat (contract §2.5.1).
    tools: Mapping[str, Any] | None = None
    #: ``__event_call__``: how direct (browser-side) tools are reached.
    event_call: EventCall | None = None
    #: Tests inject a fault-injecting transport; None = the real OpenRouter.
    transport_factory: TransportFactory | None = None
    #: Tests inject an artifact store; None = the one the valves describe.
    store_factory: StoreFactory | None = None
    #: Open WebUI's files for the intake pass; None = Open WebUI's own (``OwuiFiles``).
    files: FileStore | None = None
    #: Remote downloads; None = the process's ``Downloader`` for the valves' limits.
    downloader: UrlFetcher | None = None
    #: Tests only: video links to a loopback server pass the SSRF vetting.
    allow_loopback: bool = False

    @property
    def user_id(self) -> str | None:
        uid = self.user.get("id") or self.metadata.get("user_id")
        return str(uid) if uid else None
