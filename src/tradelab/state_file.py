"""Small JSON state files under <lab>/state/ that running services poll cheaply.

    watched = WatchedJson(path)          # in the api and engine (levers, chaos)
    data = watched.data()                # the last good content ({} when there is none)

    with locked(path):                   # the writing side (a `tradelab` command)
        data = read_json(path)
        write_atomic(path, json.dumps(data))

A reader re-parses the file only when its stat signature (mtime, size, inode)
changes, and looks at most every `check_interval_s`; writers replace the file
atomically, so a reader sees the old or the new content, never a mix. A broken
file (bad JSON, not a mapping, or refused by the reader's `validate`) keeps the last
good content and is logged once: it must not flip a lever or a fault. This is the
one polling implementation: tradelab.levers_state and tradelab.chaos_state read
through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradelab.errors import TradelabError

log = logging.getLogger("tradelab.state")

CHECK_INTERVAL_S = 0.5


def read_json(path: Path) -> dict[str, Any]:
    """The file's mapping ({} when missing); a TradelabError when unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TradelabError(f"cannot read {path}: {exc}".splitlines()[0]
                            + "; fix or delete it") from None
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    from tradelab.files import write_atomic

    write_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def locked(path: Path, what: str = "state"):
    """An exclusive lock beside `path`, so two writers never lose an update."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise TradelabError(f"cannot write {what} in {path.parent}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class WatchedJson:
    """A JSON mapping re-read only when its file changes.

    `validate(data)` raises ValueError for content the reader cannot use (kept out like
    bad JSON); `on_check()` runs at every look, under the same throttle (the chaos
    reader stats its flag file there); `what` and `logger` name the file in warnings.
    """

    def __init__(self, path: Path | None, check_interval_s: float = CHECK_INTERVAL_S, *,
                 validate: Callable[[dict[str, Any]], None] | None = None,
                 on_check: Callable[[], None] | None = None,
                 what: str = "state file", logger: logging.Logger = log) -> None:
        self.path = Path(path) if path else None
        self.check_interval_s = check_interval_s
        self.validate = validate
        self.on_check = on_check
        self.what = what
        self.logger = logger
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._signature: tuple | None = None
        self._data: dict[str, Any] = {}
        self._warned: tuple | None = None

    def data(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._checked_at >= self.check_interval_s:
                self._refresh()
            return self._data

    def _refresh(self) -> None:
        self._checked_at = time.monotonic()
        if self.on_check is not None:
            self.on_check()
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._signature, self._data = None, {}
            return
        except OSError as exc:
            self._warn_once(("stat", str(exc)), f"cannot stat {self.what} {self.path}: {exc}")
            return
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            if self.validate is not None:
                self.validate(data)
        except (OSError, ValueError) as exc:
            self._warn_once(signature, f"ignoring unreadable {self.what} {self.path}: {exc}")
            return
        self._signature, self._data = signature, data

    def _warn_once(self, key: tuple, message: str) -> None:
        if self._warned != key:
            self._warned = key
            self.logger.warning(message,
                                extra={"event": self.what.replace(" ", "_") + "_unreadable"})
