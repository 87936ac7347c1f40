"""Configuration: pydantic models, TOML loading, defaults and readable validation errors."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

BACKEND_KINDS = ("ollama", "openai")
HARDWARE_KINDS = ("npu", "igpu", "nvidia", "cpu")
DEFAULT_LISTEN = "127.0.0.1:11434"
DEFAULT_BACKEND_URL = "http://127.0.0.1:11435"
DEFAULT_BLOCKED_ENDPOINTS = (
    "/api/pull",
    "/api/push",
    "/api/delete",
    "/api/copy",
    "/api/create",
    "/api/blobs/*",
)
_SECRET_KEYS = ("admin_key", "api_key")
_BACKEND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one readable line per fault."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_host_port(value: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port") into its parts, raising ValueError when malformed."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port 1-65535, got {value!r}")
    return host, int(port)


def is_loopback_host(host: str) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerConfig(_Section):
    listen: str = DEFAULT_LISTEN
    management: str = "127.0.0.1:11437"   # loopback only; "" turns the management API off
    max_body_bytes: Annotated[int, Field(gt=0)] = 64 * 1024 * 1024
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    stream_idle_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("management")
    @classmethod
    def _management_is_loopback(cls, value: str) -> str:
        if value:
            host, _port = parse_host_port(value)
            if not is_loopback_host(host):
                raise ValueError("the management API has no authentication, so it listens only on a loopback "
                                 "address (127.0.0.1, ::1 or localhost), e.g. 127.0.0.1:11437; \"\" turns it off")
        return value


class BackendConfig(_Section):
    id: str
    kind: Literal["ollama", "openai"] = "ollama"
    url: str
    hardware: Literal["npu", "igpu", "nvidia", "cpu"] = "cpu"
    gpu_index: Annotated[int, Field(ge=0)] | None = None
    max_concurrent: Annotated[int, Field(ge=1, le=1024)] = 1
    power_watts: Annotated[float, Field(gt=0)] = 15.0
    latency_ms: Annotated[float, Field(ge=0)] = 200.0
    tokens_per_second: Annotated[float, Field(gt=0)] = 20.0
    models: list[str] = Field(default_factory=list)
    slot_cost: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    devices: list[str] | None = None
    cancel_on_disconnect: bool = True
    api_key: str | None = Field(default=None, repr=False)
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id_is_simple(cls, value: str) -> str:
        if not _BACKEND_ID.match(value):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:11435")
        return value.rstrip("/")

    @field_validator("models")
    @classmethod
    def _patterns_not_blank(cls, value: list[str]) -> list[str]:
        cleaned = [pattern.strip() for pattern in value]
        if any(not pattern for pattern in cleaned):
            raise ValueError("model patterns must not be empty strings")
        return cleaned


class HealthConfig(_Section):
    interval_seconds: Annotated[float, Field(gt=0)] = 5.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 3.0
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 60.0
    inventory_interval_seconds: Annotated[float, Field(gt=0)] = 30.0


class QueueConfig(_Section):
    max_depth: Annotated[int, Field(ge=0)] = 512
    timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    aging_seconds: Annotated[float, Field(gt=0)] = 30.0
    fair_quantum_seconds: Annotated[float, Field(ge=0)] = 1.0
    reorder_window: Annotated[int, Field(ge=1, le=256)] = 8


class EfficiencyConfig(_Section):
    default_mode: str = "balanced"
    quiet_hours: list[Annotated[int, Field(ge=0, le=23)]] = Field(default_factory=lambda: [22, 7])
    battery_hysteresis_percent: Annotated[float, Field(ge=0, le=50)] = 5.0

    @field_validator("default_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        from ollamaproxy.modes import parse_mode

        return parse_mode(value).value

    @field_validator("quiet_hours")
    @classmethod
    def _two_hours(cls, value: list[int]) -> list[int]:
        if value and len(value) != 2:
            raise ValueError("give [start_hour, end_hour] (e.g. [22, 7]) or [] to turn quiet hours off")
        return value


class PowerConfig(_Section):
    budget_watts: Annotated[float, Field(gt=0)] | None = None
    resume_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.9


class ThermalConfig(_Section):
    pause_celsius: Annotated[float, Field(gt=0, le=150)] = 82.0
    resume_celsius: Annotated[float, Field(gt=0, le=150)] = 75.0

    @model_validator(mode="after")
    def _resume_below_pause(self) -> "ThermalConfig":
        if self.resume_celsius >= self.pause_celsius:
            raise ValueError(f"thermal.resume_celsius ({self.resume_celsius:g}) must be below "
                             f"thermal.pause_celsius ({self.pause_celsius:g}) so the breaker has hysteresis")
        return self


class TelemetryConfig(_Section):
    enabled: bool = True
    interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    read_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0
    stale_seconds: Annotated[float, Field(gt=0)] = 5.0
    sysfs_root: str = "/sys"
    nvidia_smi: str = "nvidia-smi"


class RequestLogConfig(_Section):
    enabled: bool = True
    path: str = ""                        # "" = $XDG_STATE_HOME/ollamaproxy/requests.sqlite3
    retention_days: Annotated[float, Field(gt=0)] = 30
    max_rows: Annotated[int, Field(ge=1)] = 1_000_000


class GrpcConfig(_Section):
    enabled: bool = False
    listen: str = "127.0.0.1:11438"
    allow_remote: bool = False

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> "GrpcConfig":
        host, _port = parse_host_port(self.listen)
        if not self.allow_remote and not is_loopback_host(host):
            raise ValueError(f"grpc.listen = {self.listen!r} is not a loopback address; set grpc.allow_remote = true "
                             "to expose inference to the network on purpose")
        return self


class DesktopConfig(_Section):
    notifications: bool = True


class SecurityConfig(_Section):
    blocked_endpoints: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED_ENDPOINTS))
    admin_key: SecretStr | None = None   # unset: admin endpoints blocked for everyone (fail closed)

    @field_validator("admin_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("admin_key must be at least 16 characters (or leave it unset to keep admin endpoints off)")
        return value

    @field_validator("blocked_endpoints")
    @classmethod
    def _paths_absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"each blocked endpoint must start with '/', got {path!r}")
        return value


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    backends: list[BackendConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=HealthConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    efficiency: EfficiencyConfig = Field(default_factory=EfficiencyConfig)
    power: PowerConfig = Field(default_factory=PowerConfig)
    thermal: ThermalConfig = Field(default_factory=ThermalConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    desktop: DesktopConfig = Field(default_factory=DesktopConfig)
    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)

    @model_validator(mode="after")
    def _backends_sane(self) -> "Config":
        if not self.backends:
            raise ValueError("at least one [[backends]] entry is required")
        seen: set[str] = set()
        for backend in self.backends:
            if backend.id in seen:
                raise ValueError(f"backend id {backend.id!r} is used twice; ids must be unique")
            seen.add(backend.id)
        return self

    def backend(self, backend_id: str) -> BackendConfig:
        for backend in self.backends:
            if backend.id == backend_id:
                return backend
        raise KeyError(backend_id)


def default_config() -> Config:
    """The configuration used when no file exists: one local Ollama on 11435, listening on 11434."""
    return Config(backends=[BackendConfig(id="ollama", kind="ollama", url=DEFAULT_BACKEND_URL, hardware="cpu")])


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ollamaproxy" / "config.toml"


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel]:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            break
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        candidate = inner[0] if inner else annotation
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            model = candidate
    return model


def format_validation_error(error: ValidationError, data: dict[str, Any] | None = None) -> list[str]:
    """Turn pydantic errors into lines naming the key, the bad value and what is allowed."""
    lines = []
    for item in error.errors():
        loc = item["loc"]
        key = _dotted_key(loc, data)
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"{key}: unknown key; allowed keys here: {_allowed_keys(_section_model(loc))}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if kind == "missing":
            lines.append(f"{key}: required key is missing")
        elif key:
            secret = str(loc[-1]) in _SECRET_KEYS
            lines.append(f"{key} = {'<hidden>' if secret else repr(item.get('input'))}: {message}")
        else:
            lines.append(message)
    return lines


def _dotted_key(loc: tuple[Any, ...], data: dict[str, Any] | None) -> str:
    parts: list[str] = []
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            label = ""
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                ident = node[part].get("id")
                label = f" id={ident!r}" if isinstance(ident, str) else ""
            parts[-1] = f"{parts[-1]}[{part}{label}]" if parts else f"[{part}]"
        else:
            parts.append(str(part))
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return ".".join(parts)


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and part < len(node)


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, format_validation_error(error, data)) from None


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file, raising ConfigError with readable problems."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read file: {error.strerror or error}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"not valid TOML: {error}"]) from None
    return parse_config(data, str(path))
