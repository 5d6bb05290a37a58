"""Live lever state: trading halts and the routing table, in <lab>/state/levers.json.

    store = LeverStore(lab.state_dir / "levers.json")        # `tradelab ops ...`
    store.halt("AAPL")                 # or store.halt(None): the whole lab
    store.resume(None)                 # every halt off
    store.route("beta", symbol=None)   # every symbol to venue beta

    levers = LeverReader(state_file_from_env(LEVERS_FILE, lab))   # in the api and engine
    levers.halted("AAPL")              # True while AAPL or the whole lab is halted
    levers.venue_for("AAPL", settings.trading)

The file is written atomically under a lock and polled like chaos.json
(tradelab.state_file, as chaos.json is), so a lever reaches running services within about a second
without a restart. Routing precedence: a live route for the symbol, then a live route
for every symbol, then the `trading.routes` setting, then `trading.default_venue`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradelab.state_file import WatchedJson, locked, read_json, write_json

LEVERS_FILE = "levers.json"
ALL = "*"  # the key of a lab-wide halt or route


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LeverStore:
    """Reads and changes the lever file (the `tradelab ops` side)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any]:
        data = read_json(self.path)
        return {"halts": dict(data.get("halts") or {}), "routes": dict(data.get("routes") or {})}

    def halt(self, symbol: str | None, reason: str | None = None) -> dict[str, Any]:
        """Halt `symbol` (None: every symbol); the new halts."""
        with locked(self.path):
            data = self.read()
            data["halts"][symbol or ALL] = {"since": _now_iso(), "reason": reason}
            write_json(self.path, data)
        return data["halts"]

    def resume(self, symbol: str | None) -> list[str]:
        """Lift the halt of `symbol` (None: every halt); the keys lifted."""
        with locked(self.path):
            data = self.read()
            gone = list(data["halts"]) if symbol is None else [k for k in data["halts"]
                                                                if k == symbol]
            for key in gone:
                del data["halts"][key]
            write_json(self.path, data)
        return gone

    def route(self, venue: str, symbol: str | None) -> dict[str, str]:
        """Send `symbol` (None: every symbol) to `venue`; the live routes."""
        with locked(self.path):
            data = self.read()
            if symbol is None:
                data["routes"] = {ALL: venue}  # a lab-wide route replaces per-symbol ones
            else:
                data["routes"][symbol] = venue
            write_json(self.path, data)
        return data["routes"]

    def clear_routes(self) -> None:
        with locked(self.path):
            data = self.read()
            data["routes"] = {}
            write_json(self.path, data)


class LeverReader:
    """What a running service sees, re-read only when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self._file = WatchedJson(path)

    def halts(self) -> dict[str, Any]:
        halts = self._file.data().get("halts")
        return halts if isinstance(halts, dict) else {}

    def halted(self, symbol: str) -> bool:
        halts = self.halts()
        return ALL in halts or symbol in halts

    def routes(self) -> dict[str, str]:
        routes = self._file.data().get("routes")
        return {k: v for k, v in routes.items() if isinstance(v, str)} \
            if isinstance(routes, dict) else {}

    def venue_for(self, symbol: str, trading: Any) -> str:
        return venue_for(symbol, self.routes(), trading)


def venue_for(symbol: str, live_routes: dict[str, str], trading: Any) -> str:
    """The venue an order for `symbol` goes to (see the module docstring for the order);
    a live route naming an unknown venue is ignored."""
    for venue in (live_routes.get(symbol), live_routes.get(ALL), trading.routes.get(symbol)):
        if venue is not None and venue in trading.venues:
            return str(venue)
    return str(trading.default_venue)
