"""Configuration: one `Config` object from a livekit.yaml-compatible file, the environment and flags.

Keys follow livekit-server's config (pkg/config/config.go) where they overlap: `port`,
`bind_addresses`, `keys`, `key_file`, `development`, `room.*`, `limit.*`, `webhook.*`,
`redis.*`, `prometheus.*`, `logging.*`, `rtc.*`, `ingress.*`. Environment variables as LiveKit
reads them: LIVEKIT_CONFIG (a YAML body), LIVEKIT_KEYS ("key: secret" lines), REDIS_HOST,
REDIS_PASSWORD, NODE_IP, UDP_PORT. Keys LiveKit knows but lkserver does not use are reported, not fatal.

lkserver's own sections: `analytics.*` (sessions) and `gateway.*` (tenant REST gateway; env
AUTH_REQUIRED overrides gateway.auth_required).

Nothing else in lkserver reads the environment (the client SDK's LIVEKIT_* defaults aside).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

DEFAULT_ENABLED_CODECS = [
    "audio/PCMU", "audio/PCMA", "audio/opus", "audio/red",
    "video/VP8", "video/H264", "video/VP9", "video/AV1", "video/H265", "video/rtx",
]

DEV_KEYS = {"devkey": "secret"}
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


@dataclass
class RoomSettings:
    auto_create: bool = True
    empty_timeout: int = 300
    departure_timeout: int = 20
    max_participants: int = 0
    enable_remote_unmute: bool = False
    enabled_codecs: list = field(default_factory=lambda: [{"mime": m} for m in DEFAULT_ENABLED_CODECS])
    # preset name -> RoomConfiguration in protojson form (used by CreateRoom's room_preset)
    room_configurations: dict = field(default_factory=dict)
    enable_full_room_in_webhooks: bool = False


@dataclass
class LimitSettings:
    max_metadata_size: int = 524288
    max_attributes_size: int = 65536
    max_room_name_length: int = 256
    max_participant_identity_length: int = 256
    max_participant_name_length: int = 256
    max_api_request_body_size: int = 10 * 1024 * 1024


@dataclass
class WebhookSettings:
    api_key: str = ""
    urls: list = field(default_factory=list)
    # lkserver's durable delivery: how long an event is retried before it is dead-lettered
    retry_for: float = 24 * 3600.0
    request_timeout: float = 10.0
    # which events go to the global urls (as LiveKit's webhook.filter_params)
    filter_params: dict = field(default_factory=dict)


@dataclass
class RedisSettings:
    address: str = ""
    username: str = ""
    password: str = ""
    db: int = 0
    use_tls: bool = False
    sentinel_master_name: str = ""
    sentinel_username: str = ""
    sentinel_password: str = ""
    sentinel_addresses: list = field(default_factory=list)
    cluster_addresses: list = field(default_factory=list)
    dial_timeout: Any = 0
    read_timeout: Any = 0
    write_timeout: Any = 0
    pool_size: int = 0
    pool_timeout: Any = 0


@dataclass
class PrometheusSettings:
    port: int = 0
    username: str = ""
    password: str = ""


@dataclass
class LoggingSettings:
    level: str = "info"
    json: bool = False


@dataclass
class CongestionControlSettings:
    # the stream allocator may pause a subscriber's video that does not fit its link even at the
    # lowest layer (StreamStateUpdate PAUSED, then ACTIVE); LiveKit's default is off, and a client
    # can ask for it with subscriber_allow_pause
    allow_pause: bool = False


@dataclass
class RTCSettings:
    udp_port: Any = 0  # single port, or "start-end"
    port_range_start: int = 50000
    port_range_end: int = 60000
    tcp_port: int = 7881  # ICE/TCP; 0 picks a free port, negative disables it
    node_ip: str = ""
    use_external_ip: bool = False
    congestion_control: CongestionControlSettings = field(default_factory=CongestionControlSettings)


@dataclass
class IngressSettings:
    # what CreateIngress returns as `url` (LiveKit's ingress.rtmp_base_url / whip_base_url); when
    # empty, built from the listening ports and rtc.node_ip (set them for a public deployment)
    rtmp_base_url: str = ""
    whip_base_url: str = ""
    # RTMP listener; 0 picks a free port, negative disables it. The default port being taken is
    # logged and RTMP stays off; a port set in the config file must be free.
    rtmp_port: int = 1935
    rtmp_port_required: bool = field(default=False, repr=False)  # rtmp_port came from the file
    # transcoding sessions (RTMP, URL, transcoded WHIP) at once; more are refused with "server
    # capacity exceeded" as LiveKit's ingress refuses work beyond its CPU budget. 0: two per core
    # (a 720p stream to three layers takes about half a core)
    max_transcoding_sessions: int = 0


@dataclass
class AnalyticsSettings:
    # sessions (room lifetimes) are kept this many days; the sessions API's `start` may reach back
    # this far (LiveKit Cloud: "within 7 days of the current date")
    retention_days: int = 7


@dataclass
class GatewaySettings:
    # the tenant REST gateway under /livekit/ (gateway/): off unless enabled
    enabled: bool = False
    # on: every request needs a tenant secret (env AUTH_REQUIRED); off: no tenants, every room visible
    auth_required: bool = False
    tenants: dict = field(default_factory=dict)  # tenant id -> secret
    token_ttl: int = 900  # seconds a join token from POST /livekit/token is valid
    livekit_url: str = ""  # returned with tokens; default: ws(s)://<the request's Host>


@dataclass
class SIPSettings:
    """lkserver's built-in SIP bridge (LiveKit runs it as livekit/sip; its keys where they match).
    Off unless `enabled`; `port` 0 picks a free one (tests)."""
    enabled: bool = False
    port: int = 5060  # UDP and TCP
    bind: str = ""  # default: the first of bind_addresses
    node_ip: str = ""  # address put in Contact/Via/SDP; default rtc.node_ip, else the bind address
    rtp_port_start: int = 10000  # 0: any free port
    rtp_port_end: int = 20000
    ringing_timeout: float = 30.0
    media_timeout: float = 15.0  # hang up when no RTP arrives this long (0: never)
    pin_timeout: float = 30.0


@dataclass
class EgressSettings:
    """The `egress:` section (lkserver's own; keys as LiveKit egress's config where they match)."""

    output_dir: str = ""  # local storage of outputs; default <data_dir>/egress
    tmp_dir: str = ""  # work files while recording; default <data_dir>/egress-tmp
    # CPU cores reserved per job (LiveKit egress's cpu_cost keys), admission against
    # max_cpu_utilization x cores; omitted keys keep lkserver's measured defaults
    cpu_cost: dict = field(default_factory=dict)
    max_cpu_utilization: float = 0.8
    cpu_capacity: float = 0.0  # cores egress may reserve; 0 = cores x max_cpu_utilization
    # seconds: file_output_max_duration, stream_output_max_duration, segment_output_max_duration,
    # image_output_max_duration (LiveKit's session_limits); 0 = no limit
    session_limits: dict = field(default_factory=dict)
    warm_workers: int = 1  # worker processes kept started ahead of the next egress
    warm_at_start: bool = False  # start them with the server (else after the first egress)
    x264_preset: str = "veryfast"
    # storage endpoint overrides, e.g. azure: "http://127.0.0.1:10000/{account_name}" (Azurite)
    storage_endpoints: dict = field(default_factory=dict)
    chromium_path: str = ""  # web egress browser; default `chromium` on PATH


@dataclass
class Config:
    port: int = 7880
    bind_addresses: list = field(default_factory=lambda: [""])
    keys: dict = field(default_factory=dict)
    key_file: str = ""
    development: bool = False
    data_dir: str = ".lkserver"
    project_id: str = "lkserver"
    prometheus_port: int = 0  # deprecated alias of prometheus.port, as in LiveKit
    room: RoomSettings = field(default_factory=RoomSettings)
    limit: LimitSettings = field(default_factory=LimitSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    rtc: RTCSettings = field(default_factory=RTCSettings)
    egress: EgressSettings = field(default_factory=EgressSettings)
    sip: SIPSettings = field(default_factory=SIPSettings)
    ingress: IngressSettings = field(default_factory=IngressSettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    # keys present in the file that lkserver does not use (reported at start)
    ignored_keys: list = field(default_factory=list, repr=False)

    @property
    def bind_hosts(self) -> list[str]:
        """Hosts to listen on; "" in LiveKit means every interface."""
        return [h if h else "0.0.0.0" for h in self.bind_addresses] or ["0.0.0.0"]


def _type_name(t: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(t, t.__name__)


def _apply(target: Any, data: Mapping[str, Any], prefix: str, ignored: list[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(target) if f.name != "ignored_keys"}
    for key, value in data.items():
        name = str(key)
        path = f"{prefix}{name}"
        if name not in fields:
            ignored.append(path)
            continue
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            if value is None:
                continue
            _apply(current, value, path + ".", ignored)
            continue
        if value is None:
            continue
        expected = type(current)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif expected is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if expected in (bool, int, float, str, list, dict):
            ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
            if not ok:
                raise ConfigError(f"{path}: expected {_type_name(expected)}, got {value!r}")
        setattr(target, name, value)


def _parse_keys(text: str, origin: str) -> dict[str, str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: not valid YAML ({e.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, (str, int)) and isinstance(v, (str, int)) for k, v in data.items()
    ):
        raise ConfigError(f'{origin}: expected "key: secret" lines')
    return {str(k): str(v) for k, v in data.items()}


def _load_key_file(path: str) -> dict[str, str]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"key_file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXO):
        raise ConfigError(f"key_file {path} must not be accessible by others (chmod 600)")
    with open(path, encoding="utf-8") as f:
        return _parse_keys(f.read(), f"key_file {path}")


def load_config(
    *,
    config_file: str | None = None,
    config_body: str | None = None,
    env: Mapping[str, str] | None = None,
    dev: bool = False,
    port: int | None = None,
    bind: list[str] | None = None,
    data_dir: str | None = None,
    log_level: str | None = None,
    udp_port: str | None = None,
    node_ip: str | None = None,
    tcp_port: int | None = None,
) -> Config:
    """Build the Config: file (or LIVEKIT_CONFIG), then environment, then flags."""
    env = os.environ if env is None else env
    cfg = Config()
    body = config_body
    origin = "config"
    if config_file:
        origin = config_file
        try:
            with open(config_file, encoding="utf-8") as f:
                body = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read config file {config_file}: {e.strerror}") from None
    elif body is None and env.get("LIVEKIT_CONFIG"):
        body, origin = env["LIVEKIT_CONFIG"], "LIVEKIT_CONFIG"
    bind_from_file = False
    if body:
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError as e:
            raise ConfigError(f"{origin}: not valid YAML: {e}") from None
        if data is not None:
            if not isinstance(data, dict):
                raise ConfigError(f"{origin}: expected a mapping at the top level")
            bind_from_file = "bind_addresses" in data
            ingress = data.get("ingress")
            if isinstance(ingress, dict) and ingress.get("rtmp_port") is not None:
                cfg.ingress.rtmp_port_required = True
            keys = data.pop("keys", None)
            _apply(cfg, data, "", cfg.ignored_keys)
            if keys is not None:
                if not isinstance(keys, dict):
                    raise ConfigError(f'{origin}: keys must be a mapping of "key: secret"')
                cfg.keys = {str(k): str(v) for k, v in keys.items()}

    if cfg.key_file:
        cfg.keys.update(_load_key_file(cfg.key_file))
    if env.get("LIVEKIT_KEYS"):
        cfg.keys.update(_parse_keys(env["LIVEKIT_KEYS"], "LIVEKIT_KEYS"))
    if env.get("REDIS_HOST"):
        cfg.redis.address = env["REDIS_HOST"]
    if env.get("REDIS_PASSWORD"):
        cfg.redis.password = env["REDIS_PASSWORD"]
    if env.get("NODE_IP"):
        cfg.rtc.node_ip = env["NODE_IP"]
    if env.get("UDP_PORT"):
        cfg.rtc.udp_port = env["UDP_PORT"]
    if env.get("AUTH_REQUIRED"):
        cfg.gateway.auth_required = _env_bool("AUTH_REQUIRED", env["AUTH_REQUIRED"])

    if dev:
        cfg.development = True
    if cfg.development:
        if not cfg.keys:
            cfg.keys = dict(DEV_KEYS)
        if not bind_from_file:
            cfg.bind_addresses = ["127.0.0.1"]
        if not cfg.rtc.udp_port:
            cfg.rtc.udp_port = 7882
        if log_level is None and cfg.logging.level == "info":
            cfg.logging.level = "debug"
    if port is not None:
        cfg.port = port
    if bind:
        cfg.bind_addresses = list(bind)
    if data_dir is not None:
        cfg.data_dir = data_dir
    if log_level is not None:
        cfg.logging.level = log_level
    if udp_port is not None:
        cfg.rtc.udp_port = udp_port
    if node_ip is not None:
        cfg.rtc.node_ip = node_ip
    if tcp_port is not None:
        cfg.rtc.tcp_port = tcp_port
    if cfg.prometheus_port and not cfg.prometheus.port:
        cfg.prometheus.port = cfg.prometheus_port
    validate(cfg)
    return cfg


def _env_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def validate(cfg: Config) -> None:
    if not cfg.keys:
        raise ConfigError(
            "no API keys configured: set `keys` in the config file, `key_file`, or LIVEKIT_KEYS "
            '("key: secret"), or start with --dev for the development keys devkey/secret'
        )
    for k, v in cfg.keys.items():
        if not k or not v:
            raise ConfigError("API keys and secrets must be non-empty")
    if cfg.webhook.urls:
        if not isinstance(cfg.webhook.urls, list) or not all(isinstance(u, str) for u in cfg.webhook.urls):
            raise ConfigError("webhook.urls must be a list of URLs")
        if not cfg.webhook.api_key or cfg.webhook.api_key not in cfg.keys:
            raise ConfigError("api_key is required to use webhooks: set webhook.api_key to one of `keys`")
    unknown = set(cfg.webhook.filter_params) - {"include_events", "exclude_events"}
    if unknown:
        raise ConfigError(f"webhook.filter_params: unknown keys {', '.join(sorted(unknown))}")
    for name, names in cfg.webhook.filter_params.items():
        if names is not None and not (isinstance(names, list)
                                      and all(isinstance(n, str) for n in names)):
            raise ConfigError(f"webhook.filter_params.{name} must be a list of event names")
    if cfg.webhook.retry_for <= 0 or cfg.webhook.request_timeout <= 0:
        raise ConfigError("webhook.retry_for and webhook.request_timeout must be positive (seconds)")
    if bool(cfg.prometheus.username) != bool(cfg.prometheus.password):
        raise ConfigError("prometheus.username and prometheus.password must be set together")
    if str(cfg.logging.level).lower() not in LOG_LEVELS:
        raise ConfigError(f"logging.level: expected one of {', '.join(LOG_LEVELS)}, got {cfg.logging.level!r}")
    if not (0 <= cfg.port <= 65535):
        raise ConfigError(f"port {cfg.port} is out of range")
    if cfg.ingress.rtmp_port > 65535:
        raise ConfigError(f"ingress.rtmp_port {cfg.ingress.rtmp_port} is out of range")
    for url, schemes in ((cfg.ingress.rtmp_base_url, ("rtmp://", "rtmps://")),
                         (cfg.ingress.whip_base_url, ("http://", "https://"))):
        if url and not url.startswith(schemes):
            raise ConfigError(f"ingress base URL {url!r} must start with {' or '.join(schemes)}")
    if not (0 <= cfg.sip.port <= 65535):
        raise ConfigError(f"sip.port {cfg.sip.port} is out of range")
    for name in ("empty_timeout", "departure_timeout", "max_participants"):
        if getattr(cfg.room, name) < 0:
            raise ConfigError(f"room.{name} must not be negative")
    if cfg.analytics.retention_days < 1:
        raise ConfigError("analytics.retention_days must be at least 1")
    validate_gateway(cfg.gateway)


def validate_gateway(g: GatewaySettings) -> None:
    tenants = g.tenants or {}
    if not all(isinstance(k, (str, int)) and isinstance(v, (str, int)) and str(k) and str(v)
               for k, v in tenants.items()):
        raise ConfigError('gateway.tenants: expected "tenant id: secret" pairs, both non-empty')
    g.tenants = {str(k): str(v) for k, v in tenants.items()}
    if len(set(g.tenants.values())) != len(g.tenants):
        raise ConfigError("gateway.tenants: two tenants share a secret (a secret must name one tenant)")
    if g.enabled and g.auth_required and not g.tenants:
        raise ConfigError("gateway.auth_required needs at least one tenant in gateway.tenants")
    if g.token_ttl <= 0:
        raise ConfigError("gateway.token_ttl must be positive (seconds)")
    if g.livekit_url and not g.livekit_url.startswith(("ws://", "wss://", "http://", "https://")):
        raise ConfigError(f"gateway.livekit_url {g.livekit_url!r} must start with ws://, wss://, http:// or https://")


def short_secrets(cfg: Config) -> list[str]:
    """API keys whose secret is shorter than LiveKit's recommended 32 characters."""
    return [k for k, v in cfg.keys.items() if len(v) < 32]
