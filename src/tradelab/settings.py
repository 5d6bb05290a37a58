"""Effective settings: defaults <- <lab>/tradelab.yaml <- TRADELAB_* environment <- flags.

    settings = load_settings(Lab.from_flag(None), flags={"api.workers": 4})
    settings.ports.api          # 8000
    settings.sources["api.workers"]  # "flag"

Nested keys are dotted in files' YAML mappings and flags ("ports.api"), and use a
double underscore in the environment (TRADELAB_PORTS__API=8001). Environment
values of text settings are taken as they are (a URL or a password is not YAML);
the others are read as YAML, so "8001" is a number and "[A, B]" a list.
The model is strict (unknown keys are errors), so a typo in tradelab.yaml is a
one-line error naming the key, not a silently ignored setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tradelab.const import ALL_SERVICES
from tradelab.errors import TradelabError

ENV_PREFIX = "TRADELAB_"
# Mappings whose entries may be set one by one from the environment (TRADELAB_IMAGES__API).
_MAP_KEYS = ("images", "memory", "trading.routes")
_MEMORY = re.compile(r"\d+(\.\d+)?[bkmg]?")
_MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def memory_bytes(text: str) -> int:
    """'512m' -> 536870912 (the units Docker accepts for memory limits)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(text).strip().lower())
    if not match:
        raise TradelabError(f"invalid memory limit {text!r}: use e.g. 256m or 1g")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Ports(_Model):
    """Host ports; published on `bind_address`."""

    api: int = Field(8000, ge=1, le=65535)
    engine: int = Field(9101, ge=1, le=65535)  # the engine's /metrics
    postgres: int = Field(15432, ge=1, le=65535)
    prometheus: int = Field(9090, ge=1, le=65535)
    alertmanager: int = Field(9093, ge=1, le=65535)
    grafana: int = Field(3000, ge=1, le=65535)
    loki: int = Field(3100, ge=1, le=65535)
    locust: int = Field(8089, ge=1, le=65535)  # the Locust web UI and API
    locust_master: int = Field(5557, ge=1, le=65535)  # workers connect here (local runtime)


class ApiSettings(_Model):
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(4, ge=1, le=64)
    db_pool_size: int = Field(4, ge=1, le=100)  # per worker
    db_timeout_s: float = Field(2.0, gt=0)  # wait for a pooled connection, then 503
    max_body_bytes: int = Field(16384, ge=1024)


class EngineSettings(_Model):
    order_rate: float = Field(2.0, ge=0)  # background orders per second; 0 turns the flow off
    batch_size: int = Field(20, ge=1, le=1000)
    poll_interval_s: float = Field(0.25, gt=0)
    baseline_failure_rate: float = Field(0.0005, ge=0, le=1)
    exchange_latency_ms: tuple[float, float] = (5.0, 30.0)


class ChaosSettings(_Model):
    default_fault: str = "exchange-errors"
    default_rate: float = Field(0.6, ge=0, le=1)
    default_latency_ms: int = Field(800, ge=0)


class VenueSettings(_Model):
    """One simulated venue: its own latency and baseline failures (None: engine.*'s)."""

    latency_ms: tuple[float, float] | None = None
    baseline_failure_rate: float | None = Field(None, ge=0, le=1)


# alpha behaves as the single exchange did; beta is slower and a little less reliable.
DEFAULT_VENUES = {
    "alpha": {},
    "beta": {"latency_ms": (15.0, 60.0), "baseline_failure_rate": 0.001},
}


class RiskSettings(_Model):
    """Pre-trade limits, checked by the engine before an order reaches a venue."""

    max_quantity: int = Field(500_000, ge=1)  # shares per order
    max_notional: float = Field(100_000_000.0, gt=0)  # quantity x market price per order
    # An aggressive limit (BUY above / SELL below the market) further than this is refused.
    price_band: float = Field(0.10, gt=0, le=1)
    max_position: int = Field(2_000_000, ge=1)  # absolute net shares per symbol, all venues


class TradingSettings(_Model):
    """Venues, the routing table and the market-data and risk limits."""

    venues: dict[str, VenueSettings] = Field(
        default_factory=lambda: {k: VenueSettings(**v) for k, v in DEFAULT_VENUES.items()})
    default_venue: str = "alpha"
    routes: dict[str, str] = Field(default_factory=dict)  # symbol -> venue
    max_price_age_s: float = Field(5.0, gt=0)  # older prices: the order is REJECTED
    # A venue call waits this long for an answer, then the order is FAILED (EXCHANGE_TIMEOUT);
    # the engine waits inside its batch's transaction, far below its 15 s watchdog.
    venue_timeout_ms: float = Field(2000.0, gt=0, le=10_000)
    risk: RiskSettings = Field(default_factory=RiskSettings)

    @field_validator("venues")
    @classmethod
    def _venue_names(cls, value: dict[str, VenueSettings]) -> dict[str, VenueSettings]:
        if not value:
            raise ValueError("at least one venue is needed")
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
                raise ValueError(f"venue name {name!r}: use lower-case letters, digits, '-'")
        return value

    @field_validator("routes")
    @classmethod
    def _symbols_upper(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.upper(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _known_venues(self) -> TradingSettings:
        for where, venue in [("default_venue", self.default_venue),
                             *((f"routes.{s}", v) for s, v in self.routes.items())]:
            if venue not in self.venues:
                raise ValueError(f"{where}: unknown venue {venue!r}; use one of "
                                 f"{', '.join(self.venues)}")
        return self


class SloSettings(_Model):
    """SLO targets; recording and alerting rules are rendered from these."""

    availability: float = Field(0.999, gt=0, lt=1)  # POST /trades not 5xx
    latency: float = Field(0.99, gt=0, lt=1)  # share of POST /trades faster than threshold
    latency_threshold_s: float = Field(0.25, gt=0)
    processing_success: float = Field(0.999, gt=0, lt=1)  # trades not FAILED
    # Every rule window and `for:` is multiplied by this (0.1: the 5m window is 30s, the
    # 1h one 6m), so a lab in a test or a game-day rehearsal pages and recovers in
    # seconds instead of minutes. 1 is the real thing; thresholds do not change.
    window_scale: float = Field(1.0, gt=0, le=1)


class PrometheusSettings(_Model):
    scrape_interval_s: float = Field(15.0, ge=1, le=300)
    evaluation_interval_s: float = Field(15.0, ge=1, le=300)


class AlertingSettings(_Model):
    webhook_url: str | None = None  # Alertmanager posts every alert here when set
    slack_webhook_url: str | None = None
    slack_channel: str = "#tradelab-alerts"
    # Alerts link to their section of the runbooks under this address; none: the copy of
    # docs/runbooks.md installed with tradelab, as a file:// URL (tradelab.runbooks).
    runbook_base_url: str | None = None


class BuildSettings(_Model):
    base_image: str = "python:3.12-slim-bookworm"


DEFAULT_IMAGES = {
    "postgres": "postgres:16.6-bookworm",
    "prometheus": "prom/prometheus:v3.1.0",
    "alertmanager": "prom/alertmanager:v0.28.0",
    "grafana": "grafana/grafana:11.4.0",
    "loki": "grafana/loki:3.3.2",
    "promtail": "grafana/promtail:3.3.2",
    "alloy": "grafana/alloy:v1.5.1",
    "locust": "locustio/locust:2.32.4",
}

# 256m unless the service needs another size; every service of the lab has a key.
DEFAULT_MEMORY = {**dict.fromkeys(ALL_SERVICES, "256m"), "api": "512m", "postgres": "512m",
                  "prometheus": "512m", "alertmanager": "128m", "promtail": "128m"}


class Settings(_Model):
    project: str = Field("tradelab", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    runtime: Literal["auto", "docker", "local"] = "auto"
    bind_address: str = "127.0.0.1"
    database_url: str | None = None  # overrides the lab's own database everywhere
    symbols: list[str] = Field(
        default_factory=lambda: ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "JPM"],
        min_length=1,
    )
    ports: Ports = Field(default_factory=Ports)
    api: ApiSettings = Field(default_factory=ApiSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    chaos: ChaosSettings = Field(default_factory=ChaosSettings)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    slo: SloSettings = Field(default_factory=SloSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    images: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_IMAGES))
    memory: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MEMORY))
    log_agent: Literal["promtail", "alloy"] = "promtail"
    load_workers: int = Field(1, ge=1, le=64)

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("bind_address")
    @classmethod
    def _an_ip_address(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1)") from None
        return value

    @field_validator("images", "memory")
    @classmethod
    def _known_services(cls, value: dict[str, str], info) -> dict[str, str]:
        known = DEFAULT_IMAGES if info.field_name == "images" else ALL_SERVICES
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}: use one of {', '.join(sorted(known))}")
        for key, text in value.items():
            if info.field_name == "memory" and not _MEMORY.fullmatch(str(text).lower()):
                raise ValueError(f"{key}: {text!r} is not a memory size (e.g. 512m, 1g)")
            if info.field_name == "images" and not str(text).strip():
                raise ValueError(f"{key}: an image name is needed")
        return value

    @model_validator(mode="after")
    def _windows_hold_two_scrapes(self) -> Settings:
        # rate() needs two samples in its window; the shortest rule window is 5m scaled.
        shortest = 300 * self.slo.window_scale
        if shortest < 2 * self.prometheus.scrape_interval_s:
            raise ValueError(
                f"slo.window_scale {self.slo.window_scale:g} makes the shortest rule window "
                f"{shortest:g}s, less than two scrapes of {self.prometheus.scrape_interval_s:g}s"
                ": lower prometheus.scrape_interval_s or raise slo.window_scale")
        return self

    @property
    def sources(self) -> dict[str, str]:
        """Dotted key -> where its value came from ("default", "file:…", "env:…", "flag")."""
        return self._sources

    def port_keys(self, port: int) -> list[str]:
        """The settings keys that choose `port` (["ports.api"]; two when they clash)."""
        return [f"ports.{key}" for key, value in self.ports.model_dump().items()
                if value == port]

    def memory_limit_bytes(self, service: str) -> int:
        """The memory.SERVICE limit in bytes (Docker enforces it; the app exports it)."""
        return memory_bytes(self.memory.get(service) or DEFAULT_MEMORY.get(service, "256m"))

    def flat(self) -> dict[str, Any]:
        """Every effective value by dotted key (maps such as images are expanded)."""
        return _flatten(self.model_dump(mode="json"))


def load_settings(
    lab: Any = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """The effective settings for `lab` (a tradelab.lab.Lab, or None for no file)."""
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[str, Any]]] = [("default", Settings().model_dump())]
    if lab is not None and lab.config_file.is_file():
        layers.append((f"file:{lab.config_file}", _read_yaml(lab.config_file)))
    layers.append(("env", _from_env(env)))
    layers.append(("flag", _unflatten({k: v for k, v in (flags or {}).items() if v is not None})))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, layer in layers:
        _merge(merged, layer)
        for key in _flatten(layer):
            sources[key] = f"env:{_env_name(key)}" if name == "env" else name
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        # A bad mapping ("portz: {api: 1}") is known to sources only by its leaves.
        leaves = [v for k, v in sources.items() if k.startswith(key + ".") and v != "default"]
        origin = (sources.get(key) if sources.get(key, "default") != "default" else None) \
            or (leaves[-1] if leaves else "settings")
        if err["type"] == "extra_forbidden":
            raise TradelabError(f"unknown setting {key} ({origin}): check the spelling; "
                                "`tradelab config show` lists the settings") from None
        message = err["msg"].removeprefix("Value error, ")
        if not key:  # a rule across settings (Settings' own validators)
            raise TradelabError(f"invalid settings: {message}") from None
        raise TradelabError(f"invalid setting {key} ({origin}): {message}") from None
    settings._sources = {k: sources.get(k, "default") for k in settings.flat()}
    if settings.database_url and env.get(PASSWORD_FILE_ENV):
        settings.database_url = _with_password_file(settings.database_url, env[PASSWORD_FILE_ENV])
    return settings


# A container gets its database URL without the password, and the password as a file
# (tradelab.stack): the secret is then in neither `docker inspect` nor the compose file.
PASSWORD_FILE_ENV = "TRADELAB_DATABASE_PASSWORD_FILE"


def _with_password_file(url: str, password_file: str) -> str:
    from tradelab.db_url import split_password, with_password

    if split_password(url)[1] is not None:
        return url
    try:
        password = Path(password_file).read_text().strip()
    except OSError as exc:
        raise TradelabError(f"cannot read the database password from {password_file} "
                            f"({PASSWORD_FILE_ENV}): {exc.strerror}") from None
    return with_password(url, password)


def write_setting(lab: Any, key: str, value: str) -> None:
    """Set one dotted key in <lab>/tradelab.yaml, keeping the user's other values."""
    defaults = _flatten(Settings().model_dump())
    is_map_entry = key.rpartition(".")[0] in _MAP_KEYS
    if key not in defaults and not is_map_entry:
        raise TradelabError(f"unknown setting {key!r}: `tradelab config show` lists them")
    if is_map_entry or isinstance(defaults[key], str | None):
        parsed: Any = value  # text settings are taken as they are
    else:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise TradelabError(
                f"invalid setting {key}: {value!r} is not a value tradelab can read; "
                "use e.g. 8001, 0.5, true or [AAPL, MSFT]") from None
    data = _read_yaml(lab.config_file) if lab.config_file.is_file() else {}
    candidate = dict(data)
    _merge(candidate, _unflatten({key: parsed}))
    try:
        Settings.model_validate(_merge(Settings().model_dump(), candidate))
    except ValidationError as exc:
        raise TradelabError(f"invalid setting {key}: {exc.errors()[0]['msg']}") from None
    _write_config(lab.config_file, candidate)


def unset_setting(lab: Any, key: str) -> bool:
    """Remove one dotted key from <lab>/tradelab.yaml (back to its default); False when
    the file did not set it."""
    defaults = _flatten(Settings().model_dump())
    is_map_entry = key.split(".")[0] in ("images", "memory") and key.count(".") == 1
    is_group = any(k.startswith(key + ".") for k in defaults)  # e.g. `ports`: all of them
    if key not in defaults and not is_map_entry and not is_group:
        raise TradelabError(f"unknown setting {key!r}: `tradelab config show` lists them")
    data = _read_yaml(lab.config_file) if lab.config_file.is_file() else {}
    *parents, last = key.split(".")
    chain = [data]
    for part in parents:
        node = chain[-1].get(part)
        if not isinstance(node, dict):
            return False
        chain.append(node)
    if last not in chain[-1]:
        return False
    del chain[-1][last]
    for part, parent in zip(reversed(parents), reversed(chain[:-1]), strict=True):
        if parent[part]:
            break
        del parent[part]  # no empty mapping left behind
    _write_config(lab.config_file, data)
    return True


def _write_config(path: Path, data: dict[str, Any]) -> None:
    """tradelab.yaml, private (0600) whatever the umask: it may hold a database URL with
    its password or a webhook URL."""
    from tradelab.files import write_atomic

    write_atomic(path, yaml.safe_dump(data, sort_keys=True), mode=0o600)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TradelabError(f"{path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise TradelabError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "__")


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    defaults = _flatten(Settings().model_dump())
    flat: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        is_map = key in _MAP_KEYS
        is_map_entry = key.rpartition(".")[0] in _MAP_KEYS
        if key not in defaults and not (is_map or is_map_entry):
            continue  # TRADELAB_HOME and the like are not settings
        if raw == "":
            flat[key] = None
        elif is_map_entry or (key in defaults and isinstance(defaults[key], str | None)):
            # Text settings keep the raw value: a URL or password is not YAML.
            flat[key] = raw
        else:
            try:
                flat[key] = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise TradelabError(
                    f"invalid setting {key} (env:{name}): {raw!r} is not a value tradelab "
                    "can read; use e.g. 8001, 0.5, true or [AAPL, MSFT]"
                ) from None
    return _unflatten(flat)


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out
