"""orpipe's engine core: configuration, messages, errors, ports, supervision.

Trio only; no I/O library is imported here. The actors live in ``actors``
and the outside world in ``adapters``.
"""

from orpipe.engine import errors
from orpipe.engine.channels import ChannelRegistry, ChannelStats
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import *  # noqa: F403  (the error tree is public; named once, in errors.__all__)
from orpipe.engine.messages import (
    Cancelled,
    ChatRequest,
    Citation,
    Completed,
    Ending,
    Failed,
    Incomplete,
    Notice,
    OutboundEvent,
    OutputItem,
    ReasoningDelta,
    Status,
    TextDelta,
    Usage,
)
from orpipe.engine.ports import (
    AdmissionLedger,
    EnginePorts,
    LedgerVerdict,
    UpstreamResponse,
    UpstreamTransport,
)
from orpipe.engine.request import ResponseStream
from orpipe.engine.statistics import EngineStatistics, LedgerStats
from orpipe.engine.supervisor import Engine, ServiceSpec, supervise

__all__ = [
    "AdmissionLedger",
    "Cancelled",
    "ChannelRegistry",
    "ChannelStats",
    "ChatRequest",
    "Citation",
    "Completed",
    "Ending",
    "Engine",
    "EngineConfig",
    "EnginePorts",
    "EngineStatistics",
    "Failed",
    "Incomplete",
    "LedgerStats",
    "LedgerVerdict",
    "Notice",
    "OutboundEvent",
    "OutputItem",
    "ReasoningDelta",
    "ResponseStream",
    "ServiceSpec",
    "Status",
    "TextDelta",
    "UpstreamResponse",
    "UpstreamTransport",
    "Usage",
    "supervise",
]
__all__ += errors.__all__
__all__.sort()  # one alphabetical list, as every package keeps it
