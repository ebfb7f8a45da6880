"""Open WebUI's chat ``body`` → one engine ``ChatRequest`` for OpenRouter's Responses API.

The translation of the Chat Completions-shaped body Open WebUI hands a pipe
(contract §2.6) into a Responses request (contract §1.2-1.6, §4): history
messages become ``input`` items, the few sampling parameters the Responses
API shares are carried over, and everything else is dropped and named, so a
debug log can say what did not go upstream. Pure and synchronous, split along
its seams:

* ``mapping``: ``build_request``, the entry point, and what it returns;
* ``messages``: the history, with stored artifacts replayed in place;
* ``parts``: a user message's content parts (attachments checked without I/O);
* ``passthrough_tools``: tools Open WebUI runs itself, their calls, results and specs;
* ``options``: sampling, reasoning, response format, the web plugin;
* ``text``, ``tally``, ``settings``: what the others share.
"""

from orpipe.adapters.openwebui.artifact_replay import ReplayPlan
from orpipe.adapters.openwebui.request.mapping import MappedRequest, TurnAdditions, build_request
from orpipe.adapters.openwebui.request.settings import RequestSettings
from orpipe.adapters.openwebui.request.tally import RequestMappingError
from orpipe.adapters.openwebui.request.text import strip_rendered_blocks

__all__ = [
    "MappedRequest",
    "ReplayPlan",
    "RequestMappingError",
    "RequestSettings",
    "TurnAdditions",
    "build_request",
    "strip_rendered_blocks",
]
