"""The chaos state file: which faults are on, shared through one small JSON file.

    store = ChaosStore(lab.chaos_file)
    store.enable("exchange-errors", rate=0.6, duration_s=300)   # `tradelab chaos on`
    store.disable()                                             # `tradelab chaos off`

    reader = ChaosReader(chaos_file_from_env(lab))               # in the api and engine
    fault = reader.active().get("exchange-errors")               # ActiveFault or None
    registry.register(ChaosCollector(reader))                    # tradelab_chaos_active{fault}

This is the only part of chaos the containers import. `state/chaos.json` is written
atomically under a lock and polled like every state file (tradelab.state_file): a
reader sees either the old or the new state, never half a file, and re-parses it
only when its stat signature changes, at most every half second, so services pick
changes up within about a second with no restart. A fault may carry `until`; past it
the fault is off even if the file still names it.

The original project's switch, a file `chaos.flag` beside the chaos file (the lab's
`state/` folder; flag_file names it), turns the default fault on. It is one more way a
fault is on, not a hidden one: the store reports it (`source: "flag"`) wherever faults
are listed, and `disable` removes it.

A fault a restart clears (a wedged process, faults.cleared_by_restart) may persist (`persists`):
its `until` then ends only its trigger, not its effect. Every process that lived while
the trigger was on stays wedged until it is restarted (or `chaos off` removes the
entry); only a process started after the trigger ended is clean:

    store.enable("engine-stall", duration_s=30, persists=True)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradelab.errors import TradelabError
from tradelab.faults import (
    DEFAULT_FAULT,
    DEFAULT_LATENCY_MS,
    DEFAULT_RATE,
    FAULTS,
    MAX_LATENCY_MS,
    check_fault,
)
from tradelab.state_file import CHECK_INTERVAL_S, WatchedJson, locked, write_json

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

log = logging.getLogger("tradelab.chaos")

FLAG_FILE = "chaos.flag"


@dataclass(frozen=True)
class ActiveFault:
    name: str
    rate: float | None
    latency_ms: int | None
    since: datetime
    until: datetime | None = None
    source: str = "file"  # "file" | "flag"
    venue: str | None = None  # exchange faults: the one venue hit (None: every venue)
    hidden: bool = False  # injected by a drill: reports say a drill runs, not which fault
    # retry-storm: its effect outlives the record (see tradelab.faults); a wedged-process
    # fault: `until` ends its trigger, the processes it hit stay wedged (see affects)
    persists: bool = False

    def affects(self, started_at: datetime | None, now: datetime) -> bool:
        """Whether a process started at `started_at` (None: unknown) has this fault now.

        A fault a restart clears spares a process started after it went on, or, for a
        persisting one, after its trigger ended; such a fault never ends by time."""
        wedges = self.name in FAULTS and FAULTS[self.name].cleared_by_restart
        if self.persists and wedges:
            return started_at is None or self.until is None or started_at < self.until
        if self.until is not None and self.until <= now:
            return False
        return not (wedges and started_at is not None and self.since < started_at)

    def remaining_s(self, now: datetime | None = None) -> float | None:
        if self.until is None:
            return None
        return max(0.0, (self.until - (now or _now())).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.name,
            "kind": FAULTS[self.name].kind if self.name in FAULTS else "unknown",
            "rate": self.rate,
            "latency_ms": self.latency_ms,
            "since": _iso(self.since),
            "until": _iso(self.until) if self.until else None,
            "remaining_s": None if (left := self.remaining_s()) is None else round(left, 1),
            "source": self.source,
            "venue": self.venue,
            "persists": self.persists,
        }


def flag_file(chaos_file: Path) -> Path:
    """Where the original project's `chaos.flag` switch lives: beside the chaos file."""
    return Path(chaos_file).parent / FLAG_FILE


def flag_fault(path: Path, default_rate: float) -> ActiveFault | None:
    """The default fault the flag file at `path` turns on (since its mtime), or None."""
    try:
        since = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None
    return ActiveFault(DEFAULT_FAULT, default_rate, None, since, None, source="flag")


def chaos_file_from_env(lab: Lab | None = None) -> Path:
    """$TRADELAB_CHAOS_FILE, else the lab's state/chaos.json."""
    if os.environ.get("TRADELAB_CHAOS_FILE"):
        return Path(os.environ["TRADELAB_CHAOS_FILE"])
    if lab is None:
        from tradelab.lab import Lab

        lab = Lab.from_flag(None)
    return lab.chaos_file


def state_file_from_env(name: str, lab: Lab | None = None) -> Path:
    """<state dir>/name, beside the chaos file (levers.json, audit.jsonl)."""
    return chaos_file_from_env(lab).parent / name


def store_for(settings: Settings, lab: Lab) -> ChaosStore:
    """The lab's chaos file, with the settings' default rate and latency."""
    return ChaosStore(chaos_file_from_env(lab), default_rate=settings.chaos.default_rate,
                      default_latency_ms=settings.chaos.default_latency_ms)


class ChaosStore:
    """Reads and writes the chaos file (the `tradelab chaos` side)."""

    def __init__(self, path: Path, default_rate: float = DEFAULT_RATE,
                 default_latency_ms: int = DEFAULT_LATENCY_MS) -> None:
        self.path = Path(path)
        self.default_rate = default_rate
        self.default_latency_ms = default_latency_ms

    def read(self, include_expired: bool = False) -> dict[str, dict[str, Any]]:
        """Fault name -> its entry (since, until, rate, latency_ms), expired ones left out."""
        now = _now()
        return {name: entry for name, entry in self._load().items()
                if include_expired or not _expired(entry, now, name)}

    @property
    def flag_file(self) -> Path:
        return flag_file(self.path)

    def active(self) -> dict[str, ActiveFault]:
        """Every fault on: the file's entries, and the flag's default fault unless the
        file names that fault too (the file wins, as in ChaosReader)."""
        flagged = flag_fault(self.flag_file, self.default_rate)
        out = {flagged.name: flagged} if flagged else {}
        out.update({n: f for n, e in self.read().items() if (f := parse_entry(n, e)) is not None})
        return out

    def remove_flag(self) -> bool:
        """Delete the flag file; True when there was one."""
        try:
            self.flag_file.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TradelabError(f"cannot remove {self.flag_file}: {exc.strerror}") from None
        return True

    def enable(self, fault: str, rate: float | None = None, latency_ms: int | None = None,
               duration_s: float | None = None, venue: str | None = None,
               hidden: bool = False, persists: bool = False) -> dict[str, Any]:
        """Turn `fault` on (replacing its previous entry); return the new entry.

        `persists`: see tradelab.faults (retry-storm) and the module docstring (a wedged
        process, whose `duration_s` is its trigger's)."""
        spec = check_fault(fault)
        if venue is not None and "venue" not in spec.params:
            raise TradelabError(f"fault {fault} takes no --venue")
        if persists and "persist" not in spec.params and not spec.cleared_by_restart:
            persisting = ", ".join(n for n, f in FAULTS.items()
                                   if "persist" in f.params or f.cleared_by_restart)
            raise TradelabError(f"fault {fault} takes no --persist: only {persisting} do")
        if rate is not None and "rate" not in spec.params:
            raise TradelabError(f"fault {fault} takes no --rate")
        if latency_ms is not None and "latency_ms" not in spec.params:
            raise TradelabError(f"fault {fault} takes no --latency-ms")
        if "rate" in spec.params:
            rate = self.default_rate if rate is None else rate
            if not 0 <= rate <= 1:
                raise TradelabError(f"invalid rate {rate}: use a share between 0 and 1, e.g. 0.6")
        if "latency_ms" in spec.params:
            latency_ms = self.default_latency_ms if latency_ms is None else latency_ms
            if not 0 <= latency_ms <= MAX_LATENCY_MS:
                raise TradelabError(f"invalid latency {latency_ms} ms: use 0 to {MAX_LATENCY_MS}")
        if duration_s is not None:
            from tradelab.durations import parse_duration

            duration_s = parse_duration(duration_s)
        now = _now()
        entry: dict[str, Any] = {"since": _iso(now)}
        if rate is not None:
            entry["rate"] = float(rate)
        if latency_ms is not None:
            entry["latency_ms"] = int(latency_ms)
        if venue is not None:
            entry["venue"] = venue
        if duration_s is not None:
            entry["until"] = _iso(now + timedelta(seconds=duration_s))
        if hidden:
            entry["hidden"] = True
        if persists:
            entry["persists"] = True
        with locked(self.path, "chaos state"):
            faults = self._kept(self._load_or_empty())
            faults[fault] = entry
            self._write(faults)
        return entry

    def disable(self, fault: str | None = None) -> list[str]:
        """Turn `fault` off (None: every fault); return the names that were on."""
        if fault is not None:
            check_fault(fault)
        with locked(self.path, "chaos state"):
            faults = self._kept(self._load_or_empty())
            gone = list(faults) if fault is None else [f for f in faults if f == fault]
            for name in gone:
                del faults[name]
            if gone or self.path.exists():
                self._write(faults)  # a corrupt file is rewritten here (`chaos off`)
        return gone

    def overdue(self) -> dict[str, dict[str, Any]]:
        """Runtime faults past their end whose service nobody restored yet."""
        now = _now()
        return {name: entry for name, entry in self.read(include_expired=True).items()
                if name in FAULTS and FAULTS[name].kind == "runtime" and _expired(entry, now)}

    # -- file handling -----------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
            faults = data["faults"]
            if not isinstance(faults, dict):
                raise ValueError("'faults' is not a mapping")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TradelabError(
                f"cannot read {self.path}: {reason}; fix or delete it (`tradelab chaos off`"
                " rewrites it)") from None
        return {k: v for k, v in faults.items() if isinstance(v, dict)}

    def _load_or_empty(self) -> dict[str, dict[str, Any]]:
        """The entries, or none from a corrupt file (which the caller then rewrites)."""
        try:
            return self._load()
        except TradelabError as exc:
            log.warning("rewriting it: %s", exc, extra={"event": "chaos_file_rewritten"})
            return {}

    @staticmethod
    def _kept(faults: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Entries still meaningful: not expired, or a runtime fault not yet restored."""
        now = _now()
        return {n: e for n, e in faults.items() if not _expired(e, now, n)
                or (n in FAULTS and FAULTS[n].kind == "runtime")}

    def _write(self, faults: dict[str, dict[str, Any]]) -> None:
        write_json(self.path, {"faults": faults})


class ChaosReader:
    """What a running service sees: the active faults, re-read only when the file changes
    (a tradelab.state_file.WatchedJson, which also stats the flag file at each look)."""

    def __init__(self, path: Path | None, flag_dir: Path | None = None,
                 default_rate: float = DEFAULT_RATE,
                 check_interval_s: float = CHECK_INTERVAL_S,
                 started_at: datetime | None = None) -> None:
        # started_at: when this process started; faults that are cleared_by_restart and
        # went on before it are not this process's (it is the restarted one).
        self.started_at = started_at
        # The flag sits beside the chaos file (flag_file); flag_dir only for tests and a
        # service run by hand without one (then its working directory).
        self.flag = (Path(flag_dir) / FLAG_FILE if flag_dir else
                     flag_file(Path(path)) if path else None)
        self.default_rate = default_rate
        self._flag: ActiveFault | None = None
        self._file = WatchedJson(path, check_interval_s, validate=_faults_mapping,
                                 on_check=self._check_flag, what="chaos file", logger=log)

    @property
    def path(self) -> Path | None:
        return self._file.path

    def active(self) -> dict[str, ActiveFault]:
        """Fault name -> ActiveFault for every fault on right now."""
        faults = self._file.data().get("faults") or {}
        flagged = self._flag
        now = _now()
        out: dict[str, ActiveFault] = {flagged.name: flagged} if flagged else {}
        for name, entry in faults.items():
            fault = parse_entry(name, entry) if isinstance(entry, dict) else None
            if fault is not None and fault.affects(self.started_at, now):
                out[name] = fault  # the file wins over the flag
        return out

    def get(self, name: str) -> ActiveFault | None:
        return self.active().get(name)

    def _check_flag(self) -> None:
        self._flag = flag_fault(self.flag or Path.cwd() / FLAG_FILE, self.default_rate)


def _faults_mapping(data: dict[str, Any]) -> None:
    """A chaos file the reader can use: {"faults": {name: entry, ...}}."""
    if not isinstance(data.get("faults"), dict):
        raise ValueError("'faults' is missing or not a mapping")


def reported_faults(active: dict[str, ActiveFault]) -> dict[str, dict[str, Any]]:
    """What status reports may show of the active faults: a drill's hidden faults are
    one "drill" entry that names none of them (the person practising must find it)."""
    out = {name: f.as_dict() for name, f in active.items() if not f.hidden}
    if any(f.hidden for f in active.values()):
        out[DRILL_ENTRY] = {"fault": DRILL_ENTRY, "kind": "hidden",
                            "description": "a drill is running: the fault is hidden"}
    return out


DRILL_ENTRY = "drill"


class ChaosCollector:
    """A Prometheus collector, at scrape: tradelab_drill_active (1 while a drill's hidden
    fault is on) and tradelab_chaos_active{fault} for every known fault, the latter left
    out entirely while a drill runs so that no series gives its fault away.

    Register it in any registry (the engine's own, or the API's per-scrape
    multiprocess registry); it asks the reader at scrape time, so it is never stale.
    """

    def __init__(self, reader: ChaosReader) -> None:
        self.reader = reader

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        active = self.reader.active()
        drill = any(f.hidden for f in active.values())
        yield GaugeMetricFamily("tradelab_drill_active",
                                "1 while a drill runs (its fault is hidden), else 0",
                                value=1.0 if drill else 0.0)
        if drill:
            return
        family = GaugeMetricFamily("tradelab_chaos_active",
                                   "1 while a chaos fault is on, else 0", labels=["fault"])
        for name in FAULTS:
            family.add_metric([name], 1.0 if name in active else 0.0)
        yield family


def parse_entry(name: str, entry: dict[str, Any]) -> ActiveFault | None:
    if name not in FAULTS:
        return None  # written by a newer tradelab; nothing here knows how to apply it
    try:
        rate = entry.get("rate")
        latency = entry.get("latency_ms")
        return ActiveFault(
            name=name,
            rate=None if rate is None else _clamp(float(rate), 0.0, 1.0),
            latency_ms=None if latency is None else int(_clamp(float(latency), 0, MAX_LATENCY_MS)),
            since=_parse_time(entry.get("since")) or _now(),
            until=_parse_time(entry.get("until")),
            venue=entry.get("venue") if isinstance(entry.get("venue"), str) else None,
            hidden=entry.get("hidden") is True,
            persists=entry.get("persists") is True,
        )
    except (TypeError, ValueError, OverflowError):
        return None


def _clamp(value: float, low: float, high: float) -> float:
    """`value` within [low, high]; NaN counts as `low` (a hand-edited file must not crash)."""
    return low if value != value else min(high, max(low, value))


def _expired(entry: dict[str, Any], now: datetime, name: str | None = None) -> bool:
    if entry.get("persists") is True and name in FAULTS and FAULTS[name].cleared_by_restart:
        return False  # its `until` ends the trigger only (ActiveFault.affects)
    try:
        until = _parse_time(entry.get("until"))
    except (TypeError, ValueError, OverflowError):
        return False
    return until is not None and until <= now


def _parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)
