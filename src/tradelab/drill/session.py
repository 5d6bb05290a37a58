"""A drill's files: its plan, its append-only event log and which drill is current.

    session = new_session(lab, plan)             # state/drills/<id>/plan.json, current -> id
    session.append("ack")                        # events.jsonl, one JSON object per line
    session.events(); session.finished()         # "completed" | "ended" | "abandoned" | None
    current_session(lab)                         # the running drill, or a TradelabError

Every party writes events (the CLI: ack, diagnose, end; the watcher: injected, alerts,
mitigated, completed; `chaos off`: abandoned), each as one append under a lock, so
nobody rewrites anybody's record. A drill is finished by its first finishing event;
later ones are refused. The files are 0600: plan.json holds the answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradelab.errors import TradelabError
from tradelab.files import write_atomic

FINISHING = ("completed", "ended", "abandoned")
CURRENT = "current"


def drills_dir(lab: Any) -> Path:
    return Path(lab.state_dir) / "drills"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class DrillSession:
    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def plan(self) -> dict[str, Any]:
        return json.loads((self.folder / "plan.json").read_text())

    def append(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """Record one event; a second finishing event is refused (returns None)."""
        event = {"time": now_iso(), "event": kind, **fields}
        with self._locked():
            if kind in FINISHING and self._finished_unlocked():
                return None
            fd = os.open(self.folder / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                         0o600)
            try:
                os.write(fd, (json.dumps(event) + "\n").encode())
            finally:
                os.close(fd)
        return event

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = (self.folder / "events.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if kind is None or e["event"] == kind]

    def first(self, kind: str) -> dict[str, Any] | None:
        found = self.events(kind)
        return found[0] if found else None

    def required(self, kind: str) -> dict[str, Any]:
        """The first event of `kind`, which the drill cannot be without."""
        event = self.first(kind)
        if event is None:
            raise TradelabError(f"drill {self.id} has no {kind} event: its events.jsonl "
                                f"was edited or cut short")
        return event

    def finished(self) -> str | None:
        """How the drill finished ("completed", "ended", "abandoned"), or None."""
        return self._finished_unlocked()

    def _finished_unlocked(self) -> str | None:
        for event in self.events():
            if event["event"] in FINISHING:
                return event["event"]
        return None

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.folder / name
        write_atomic(path, text, mode=0o600)
        return path

    @contextlib.contextmanager
    def _locked(self):
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def new_session(lab: Any, plan: dict[str, Any]) -> DrillSession:
    """A new drill folder with its plan; it becomes the current drill."""
    root = drills_dir(lab)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    drill_id = f"{stamp}-seed{plan['seed']}"
    folder = root / drill_id
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"{drill_id}-{n}"
    folder.mkdir(mode=0o700)
    session = DrillSession(folder)
    session.write("plan.json", json.dumps(plan, indent=2) + "\n")
    _set_current(lab, session.id)
    return session


def current_session(lab: Any, running: bool = True) -> DrillSession:
    """The current drill (`running`: only while it runs), else a TradelabError."""
    session = last_session(lab)
    if session is None or (running and session.finished()):
        raise TradelabError("no drill is running: start one with `tradelab drill start`")
    return session


def last_session(lab: Any) -> DrillSession | None:
    try:
        drill_id = (drills_dir(lab) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    folder = drills_dir(lab) / drill_id
    return DrillSession(folder) if (folder / "plan.json").exists() else None


def all_sessions(lab: Any) -> list[DrillSession]:
    root = drills_dir(lab)
    if not root.is_dir():
        return []
    return [DrillSession(p) for p in sorted(root.iterdir()) if (p / "plan.json").is_file()]


def abandon_current(lab: Any, reason: str) -> None:
    """Called by `chaos off`: the drill whose hidden fault it removed is abandoned."""
    session = last_session(lab)
    if session is not None and not session.finished():
        session.append("abandoned", reason=reason)


def _set_current(lab: Any, drill_id: str) -> None:
    path = drills_dir(lab) / CURRENT
    path.unlink(missing_ok=True)
    write_atomic(path, drill_id + "\n", mode=0o600)
