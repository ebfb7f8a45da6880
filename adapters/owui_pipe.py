"""
title: orpipe: OpenRouter Responses
author: orpipe
author_url: https://github.com/orpipe/orpipe
version: 0.1.0
license: MIT
required_open_webui_version: 0.9.0
description: Every OpenRouter model via the Responses API on a bounded trio engine.
requirements: orpipe==0.1.0
"""

# This file is an Open WebUI Function (Admin → Functions → import). It is a
# thin shell: the work happens in the installed `orpipe` package, so install
# that into Open WebUI's Python environment first (README, "Use it in Open
# WebUI"). The requirements line above then finds it already installed and
# pip does nothing; if it is missing, saving the Function fails with pip's
# message instead of the Function loading half-working.
#
# Open WebUI rewrites certain import-like phrases anywhere in a Function's
# text before running it, so this file avoids them (a test checks).

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

try:
    from orpipe.adapters.openwebui.turn import TurnContext, list_models, run_turn
    from orpipe.adapters.openwebui.valves import UserValves as _UserValves
    from orpipe.adapters.openwebui.valves import Valves as _Valves
    from orpipe.adapters.openwebui.valves import secret_storage_warning
except ImportError as exc:  # pragma: no cover - exercised by hand in Open WebUI
    raise ImportError(
        "The orpipe package is not installed in Open WebUI's Python environment. "
        "Run `pip install <path to the orpipe checkout or wheel>` with Open WebUI's "
        "Python, restart Open WebUI, then enable this Function again."
    ) from exc


class Pipe:
    """An Open WebUI manifold: one model entry per OpenRouter model that MODEL_ID selects.

    One instance serves every concurrent request of a worker process, and
    Open WebUI replaces ``self.valves`` on every dispatch; so ``pipe()``
    reads the valves once and keeps nothing of a request on ``self``.
    """

    Valves = _Valves
    UserValves = _UserValves

    def __init__(self) -> None:
        self.type = "manifold"
        self.valves = self.Valves()
        warning = secret_storage_warning()
        if warning:
            import logging  # noqa: PLC0415 - only needed for this one line

            logging.getLogger("orpipe.owui").warning(warning)

    async def pipes(self) -> list[dict[str, str]]:
        return await list_models(self.valves)

    async def pipe(  # noqa: PLR0917 - Open WebUI passes these by name, as its API defines
        self,
        body: dict[str, Any],
        __user__: dict[str, Any] | None = None,
        __request__: Any = None,
        __event_emitter__: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        __event_call__: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __tools__: dict[str, Any] | Awaitable[dict[str, Any]] | None = None,
        __task__: str | None = None,
        __task_body__: dict[str, Any] | None = None,
    ) -> str | AsyncGenerator[dict[str, Any], None]:
        valves = self.valves  # once: Open WebUI may swap it while this request runs
        tools = __tools__
        if inspect.isawaitable(tools):  # some Open WebUI versions hand over a coroutine
            tools = await tools
        context = TurnContext(
            user=__user__ or {},
            metadata=__metadata__ or {},
            emitter=__event_emitter__,
            task=str(__task__) if __task__ else None,
            tools=tools if isinstance(tools, dict) else None,
            event_call=__event_call__,
        )
        return await run_turn(valves, body, context)
