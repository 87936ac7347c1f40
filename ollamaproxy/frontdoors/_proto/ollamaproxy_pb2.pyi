from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_BEST_EFFORT: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_BEST_EFFORT: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_CRITICAL: Priority

class Routing(_message.Message):
    __slots__ = ("target_backend", "latency_critical", "power_efficient", "max_latency_ms", "max_power_watts", "priority", "client_id", "request_id")
    TARGET_BACKEND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_CRITICAL_FIELD_NUMBER: _ClassVar[int]
    POWER_EFFICIENT_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    target_backend: str
    latency_critical: bool
    power_efficient: bool
    max_latency_ms: float
    max_power_watts: float
    priority: Priority
    client_id: str
    request_id: str
    def __init__(self, target_backend: _Optional[str] = ..., latency_critical: _Optional[bool] = ..., power_efficient: _Optional[bool] = ..., max_latency_ms: _Optional[float] = ..., max_power_watts: _Optional[float] = ..., priority: _Optional[_Union[Priority, str]] = ..., client_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "images")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    images: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., images: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "prompt", "messages", "system", "options", "routing", "keep_alive")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    system: str
    options: _struct_pb2.Struct
    routing: Routing
    keep_alive: str
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., system: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., keep_alive: _Optional[str] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("ttft_ms", "total_time_ms", "prompt_tokens", "token_count", "tokens_per_sec")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    total_time_ms: float
    prompt_tokens: int
    token_count: int
    tokens_per_sec: float
    def __init__(self, ttft_ms: _Optional[float] = ..., total_time_ms: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., token_count: _Optional[int] = ..., tokens_per_sec: _Optional[float] = ...) -> None: ...

class GenerateReply(_message.Message):
    __slots__ = ("text", "done", "done_reason", "backend", "routing_reason", "request_id", "stats")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_REASON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ROUTING_REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    text: str
    done: bool
    done_reason: str
    backend: str
    routing_reason: str
    request_id: str
    stats: Stats
    def __init__(self, text: _Optional[str] = ..., done: _Optional[bool] = ..., done_reason: _Optional[str] = ..., backend: _Optional[str] = ..., routing_reason: _Optional[str] = ..., request_id: _Optional[str] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("token", "done", "done_reason", "backend", "routing_reason", "request_id", "stats")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_REASON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ROUTING_REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    token: str
    done: bool
    done_reason: str
    backend: str
    routing_reason: str
    request_id: str
    stats: Stats
    def __init__(self, token: _Optional[str] = ..., done: _Optional[bool] = ..., done_reason: _Optional[str] = ..., backend: _Optional[str] = ..., routing_reason: _Optional[str] = ..., request_id: _Optional[str] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "input", "options", "routing", "truncate", "dimensions", "keep_alive")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    model: str
    input: _containers.RepeatedScalarFieldContainer[str]
    options: _struct_pb2.Struct
    routing: Routing
    truncate: bool
    dimensions: int
    keep_alive: str
    def __init__(self, model: _Optional[str] = ..., input: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., truncate: _Optional[bool] = ..., dimensions: _Optional[int] = ..., keep_alive: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedReply(_message.Message):
    __slots__ = ("embeddings", "backend", "routing_reason", "request_id", "prompt_tokens", "total_time_ms")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ROUTING_REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    backend: str
    routing_reason: str
    request_id: str
    prompt_tokens: int
    total_time_ms: float
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., backend: _Optional[str] = ..., routing_reason: _Optional[str] = ..., request_id: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., total_time_ms: _Optional[float] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Backend(_message.Message):
    __slots__ = ("id", "kind", "hardware", "url", "health", "health_reason", "enabled", "in_flight", "capacity", "queued", "models", "loaded_models", "pinned_models", "breaker", "breaker_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    PINNED_MODELS_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    BREAKER_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    hardware: str
    url: str
    health: str
    health_reason: str
    enabled: bool
    in_flight: int
    capacity: int
    queued: int
    models: _containers.RepeatedScalarFieldContainer[str]
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    pinned_models: _containers.RepeatedScalarFieldContainer[str]
    breaker: str
    breaker_reason: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., hardware: _Optional[str] = ..., url: _Optional[str] = ..., health: _Optional[str] = ..., health_reason: _Optional[str] = ..., enabled: _Optional[bool] = ..., in_flight: _Optional[int] = ..., capacity: _Optional[int] = ..., queued: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., loaded_models: _Optional[_Iterable[str]] = ..., pinned_models: _Optional[_Iterable[str]] = ..., breaker: _Optional[str] = ..., breaker_reason: _Optional[str] = ...) -> None: ...

class ListBackendsReply(_message.Message):
    __slots__ = ("backends",)
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    def __init__(self, backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ...) -> None: ...

class HealthCheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheckReply(_message.Message):
    __slots__ = ("status", "reason", "version", "paused", "available_backends", "total_backends", "queue_depth", "in_flight", "efficiency_mode")
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[HealthCheckReply.ServingStatus]
        SERVING: _ClassVar[HealthCheckReply.ServingStatus]
        NOT_SERVING: _ClassVar[HealthCheckReply.ServingStatus]
    UNKNOWN: HealthCheckReply.ServingStatus
    SERVING: HealthCheckReply.ServingStatus
    NOT_SERVING: HealthCheckReply.ServingStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    EFFICIENCY_MODE_FIELD_NUMBER: _ClassVar[int]
    status: HealthCheckReply.ServingStatus
    reason: str
    version: str
    paused: bool
    available_backends: int
    total_backends: int
    queue_depth: int
    in_flight: int
    efficiency_mode: str
    def __init__(self, status: _Optional[_Union[HealthCheckReply.ServingStatus, str]] = ..., reason: _Optional[str] = ..., version: _Optional[str] = ..., paused: _Optional[bool] = ..., available_backends: _Optional[int] = ..., total_backends: _Optional[int] = ..., queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., efficiency_mode: _Optional[str] = ...) -> None: ...
