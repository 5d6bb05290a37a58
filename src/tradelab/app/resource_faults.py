"""The resource faults a service carries out in its own process: cpu-hog and memory-leak.

    hog = ResourceFaults(reader, ("cpu-hog",), memory_limit_bytes=256 << 20)
    hog.ensure_running()     # once per process (after fork): a daemon thread watches

While `cpu-hog` is on, HOG_THREADS threads hash a buffer in a loop (hashlib lets go of
the GIL on large buffers, so they burn whole cores beside the service's own work, as a
runaway thread in a C extension would). While `memory-leak` is on, the process keeps
LEAK_STEP_BYTES more anonymous memory every LEAK_EVERY_S, touched so that it is
resident, until its service holds LEAK_TARGET of its memory limit (memory.SERVICE):
bounded, so the machine survives, and past the 80% the ServiceMemoryHigh alert looks
for. When the fault goes off the threads stop and the memory is unmapped; a process
started after the fault went on does not have it (ChaosReader's `started_at`), so
`tradelab ops restart SERVICE` mitigates both, as at work.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("tradelab.chaos")

HOG_THREADS = 2
LEAK_STEP_BYTES = 4 << 20
LEAK_EVERY_S = 0.5  # 8 MiB/s per process
LEAK_TARGET = 0.9  # of the service's memory limit
LEAK_MAX_BYTES = 512 << 20  # per process, whatever the limit says
CHECK_EVERY_S = 0.5
_PAGE = mmap.PAGESIZE


class ResourceFaults:
    """Watches the chaos reader in a daemon thread and applies the faults it is given."""

    def __init__(self, reader: Any, faults: Iterable[str], memory_limit_bytes: int,
                 root_pid: Any = os.getpid) -> None:
        self.reader = reader
        self.faults = tuple(faults)
        self.memory_limit_bytes = memory_limit_bytes
        self.root_pid = root_pid
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._hog: threading.Event | None = None  # set while the hog's threads burn
        self._leaked: list[mmap.mmap] = []

    def ensure_running(self) -> None:
        """Start the watcher in this process unless it runs already (cheap: per request)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child starts afresh: no threads came along
            self._hog, self._leaked = None, []
            threading.Thread(target=self._watch, name="tradelab-resource-faults",
                             daemon=True).start()

    @property
    def leaked_bytes(self) -> int:
        return len(self._leaked) * LEAK_STEP_BYTES

    def _watch(self) -> None:
        wait = threading.Event().wait
        while True:
            try:
                active = self.reader.active()
                self._cpu_hog("cpu-hog" in self.faults and "cpu-hog" in active)
                self._memory_leak("memory-leak" in self.faults and "memory-leak" in active)
            except Exception:  # noqa: BLE001 - a fault must never take the service down
                log.exception("resource fault watcher", extra={"event": "chaos_error"})
            wait(LEAK_EVERY_S if self._leaked else CHECK_EVERY_S)

    def _cpu_hog(self, on: bool) -> None:
        if on and self._hog is None:
            self._hog = running = threading.Event()  # one per hog: an old one never restarts
            running.set()
            for i in range(HOG_THREADS):
                threading.Thread(target=_burn, args=(running,), daemon=True,
                                 name=f"tradelab-cpu-hog-{i}").start()
            log.warning("chaos: burning CPU", extra={"event": "chaos_injected",
                                                     "fault": "cpu-hog",
                                                     "threads": HOG_THREADS})
        elif not on and self._hog is not None:
            self._hog.clear()
            self._hog = None

    def _memory_leak(self, on: bool) -> None:
        if not on:
            if self._leaked:
                freed = self.leaked_bytes
                for block in self._leaked:
                    block.close()  # munmap: the memory goes back to the system at once
                self._leaked = []
                log.info("chaos: leaked memory freed", extra={
                    "event": "chaos_removed", "fault": "memory-leak", "bytes": freed})
            return
        from tradelab.app.process_metrics import tree_usage

        usage = tree_usage(self.root_pid())
        held = usage.resident_bytes if usage else 0
        if held >= LEAK_TARGET * self.memory_limit_bytes or self.leaked_bytes >= LEAK_MAX_BYTES:
            return
        block = mmap.mmap(-1, LEAK_STEP_BYTES)
        for offset in range(0, LEAK_STEP_BYTES, _PAGE):
            block[offset] = 1  # touched: resident, not just reserved
        if not self._leaked:
            log.warning("chaos: leaking memory", extra={"event": "chaos_injected",
                                                        "fault": "memory-leak"})
        self._leaked.append(block)


def _burn(on: threading.Event) -> None:
    data = b"\xa5" * (1 << 20)
    while on.is_set():
        hashlib.sha256(data).digest()
