"""The audit log: every command that changed the lab, one JSON object per line.

    record(lab, "ops halt", ["--symbol", "AAPL"], outcome="ok")   # done by cli/main.py
    entries = read_audit(lab)      # [{"time", "command", "arguments", "outcome", ...}]
    registry.register(AuditCollector(path))   # tradelab_operator_actions_total{command}

`<lab>/state/audit.jsonl` is appended under a lock, one write per line. The CLI's
root group records every command named in AUDITED (and `ops db sessions` when it
kills), whether it worked or not, so no command module has to remember to. Values
that may be secret (URLs with passwords, webhook settings) are masked. The engine
exports the count by command, read from the file at scrape time.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"
AUDITED = (
    "up", "down", "config set", "db migrate", "load", "load stop",
    "chaos on", "chaos off",
    "gameday run", "drill start", "drill end",
    "ops halt", "ops resume", "ops route", "ops restart", "ops requeue", "ops db sessions",
)
_KILL_FLAGS = ("--kill", "--kill-idle-in-transaction")
_SECRET_WORDS = ("url", "password", "secret", "token", "webhook")


def is_audited(command: str, arguments: list[str]) -> bool:
    """Whether `command` (its path, e.g. "ops halt") with these arguments changes the lab."""
    if any(a in ("--help", "-h") for a in arguments) or command not in AUDITED:
        return False
    if command == "ops db sessions":  # listing sessions changes nothing
        return any(a.split("=")[0] in _KILL_FLAGS for a in arguments)
    return True


def audit_path(lab: Any) -> Path:
    return lab.state_dir / AUDIT_FILE


def record(lab: Any, command: str, arguments: list[str], outcome: str,
           exit_code: int = 0, error: str | None = None) -> dict[str, Any]:
    """Append one entry; never raises (an unwritable log must not fail the command)."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "command": command, "arguments": mask(arguments), "outcome": outcome,
        "exit_code": exit_code, "user": os.environ.get("USER") or str(os.getuid()),
    }
    if error:
        entry["error"] = error
    path = audit_path(lab)
    line = (json.dumps(entry, sort_keys=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass
    return entry


def mask(arguments: list[str]) -> list[str]:
    """The arguments with secret-looking values replaced by ***."""
    from tradelab.db.connect import redact

    out: list[str] = []
    hide_next = False
    for arg in arguments:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name = arg.split("=", 1)[0].lower()
        secret = any(w in name for w in _SECRET_WORDS)
        if secret and "=" in arg:
            out.append(f"{arg.split('=', 1)[0]}=***")
        else:
            out.append(redact(arg) if "://" in arg else arg)
            hide_next = secret  # "--database-url X" or "config set alerting.webhook_url X"
    return out


def read_audit(lab: Any) -> list[dict[str, Any]]:
    try:
        lines = audit_path(lab).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip().startswith("{")]


class AuditCollector:
    """tradelab_operator_actions_total{command}, counted from the audit file at scrape time
    (read from where the last scrape stopped)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._offset = 0
        self._inode: int | None = None
        self._counts = {c: 0 for c in AUDITED}

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._catch_up()
            return dict(self._counts)

    def _catch_up(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if inode != self._inode:  # a new file: count it from the start
                    self._inode, self._offset = inode, 0
                    self._counts = {c: 0 for c in AUDITED}
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line being written counts next time
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                command = json.loads(line).get("command")
            except ValueError:
                continue
            if command in self._counts:
                self._counts[command] += 1

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("tradelab_operator_actions",
                                     "Commands that changed the lab (state/audit.jsonl)",
                                     labels=["command"])
        for command, n in self.counts().items():
            family.add_metric([command], n)
        yield family
