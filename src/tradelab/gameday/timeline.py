"""The running game day's timeline, shared by its actions through one small file.

    timeline = Timeline.of(lab)          # <lab>/state/gameday-timeline.json
    timeline.reset(scenario="db-outage")
    timeline.mark("injected_at")         # now, as a unix time
    timeline.saw_alerts(alerts)          # first/last seen of every alert Alertmanager shows
    timeline.read()["injected_at"]

A file, not module state: `chaos run` and `tradelab gameday run` run the actions in one
process, but a person may also run a probe or an action on its own.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "gameday-timeline.json"


@dataclass(frozen=True)
class Timeline:
    path: Path

    @classmethod
    def of(cls, lab) -> Timeline:
        return cls(lab.state_dir / FILE_NAME)

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def reset(self, **fields: Any) -> None:
        self._write({"started_at": time.time(), "alerts": {}, **fields})

    def mark(self, key: str, value: Any = None) -> Any:
        data = self.read()
        data[key] = time.time() if value is None else value
        self._write(data)
        return data[key]

    def saw_alerts(self, alerts: list[dict[str, Any]], now: float | None = None) -> None:
        """Record every alert in `alerts` (tradelab.alerts form) as seen now; an alert seen
        before and absent now is marked resolved."""
        now = time.time() if now is None else now
        data = self.read()
        seen = data.setdefault("alerts", {})
        names = set()
        for a in alerts:
            names.add(a["alertname"])
            entry = seen.setdefault(a["alertname"], {
                "alertname": a["alertname"], "severity": a["severity"],
                "starts_at": a["since"], "first_seen": now})
            entry["last_seen"] = now
            entry.pop("resolved_seen", None)
        for name, entry in seen.items():
            if name not in names and "resolved_seen" not in entry:
                entry["resolved_seen"] = now
        self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        from tradelab.files import write_atomic

        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
