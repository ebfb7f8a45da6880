"""orpipe's engine core: configuration, messages, errors, ports, supervision.

Trio only; no I/O library is imported here. The actors live in ``actors``
and the outside world in ``adapters``.
"""

from orpipe.engine.channels import ChannelRegistry, ChannelStats
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import (
    AdmissionRejected,
    ConfigError,
    EngineClosed,
    EngineCrashed,
    EngineError,
    RequestDeadlineExceeded,
    RequestShed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamNotAStream,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamResponseFailed,
    UpstreamTimeout,
    UsageError,
)
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
from orpipe.engine.ports import EnginePorts, UpstreamResponse, UpstreamTransport
from orpipe.engine.request import ResponseStream
from orpipe.engine.statistics import EngineStatistics
from orpipe.engine.supervisor import Engine, ServiceSpec, supervise

__all__ = [
    "AdmissionRejected",
    "Cancelled",
    "ChannelRegistry",
    "ChannelStats",
    "ChatRequest",
    "Citation",
    "Completed",
    "ConfigError",
    "Ending",
    "Engine",
    "EngineClosed",
    "EngineConfig",
    "EngineCrashed",
    "EngineError",
    "EnginePorts",
    "EngineStatistics",
    "Failed",
    "Incomplete",
    "Notice",
    "OutboundEvent",
    "OutputItem",
    "ReasoningDelta",
    "RequestDeadlineExceeded",
    "RequestShed",
    "ResponseStream",
    "ServiceSpec",
    "Status",
    "TextDelta",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamNotAStream",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamResponse",
    "UpstreamResponseFailed",
    "UpstreamTimeout",
    "UpstreamTransport",
    "Usage",
    "UsageError",
    "supervise",
]
