"""orpipe's engine core: configuration, messages, errors, ports, supervision.

Trio only; no I/O library is imported here. The actors live in ``actors``
and the outside world in ``adapters``.
"""

from engine.channels import ChannelRegistry, ChannelStats
from engine.config import EngineConfig
from engine.errors import (
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
from engine.messages import (
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
from engine.ports import EnginePorts, UpstreamResponse, UpstreamTransport
from engine.request import ResponseStream
from engine.statistics import EngineStatistics
from engine.supervisor import Engine, ServiceSpec, supervise

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
