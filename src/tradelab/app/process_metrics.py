"""A service's processes as Prometheus sees them: CPU, resident memory, start time, limit.

    registry.register(ProcessTreeCollector(service_root_pid, memory_limit_bytes=512 << 20))
    usage = tree_usage(os.getpid())   # TreeUsage(cpu_seconds, resident_bytes, start_time)

A service is a tree of processes: the engine is one, the API is gunicorn's master and
its workers. prometheus_client's own process collector sees one process and is not
part of its multiprocess mode, so the API would export nothing; this collector reads
/proc at scrape time for the whole tree instead, whichever worker answers:

- tradelab_process_cpu_seconds_total: CPU time of the live processes (utilization);
- tradelab_process_runnable_threads: their threads running or waiting for a CPU at
  scrape time, the scraping thread left out (saturation: what they ask for, which
  a busy machine does not hide the way it hides CPU time);
- tradelab_process_resident_memory_bytes: their resident memory (a leak);
- tradelab_process_memory_limit_bytes: the service's memory.SERVICE setting;
- tradelab_process_start_time_seconds: when the root started (a crash-restart
  changes it; the ServiceRestarted alert watches for that).

On a system without /proc the collector yields nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class TreeUsage:
    cpu_seconds: float
    resident_bytes: int
    start_time: float  # Unix time the root process started
    runnable_threads: int  # state R now, the calling thread left out


def tree_usage(root: int) -> TreeUsage | None:
    """CPU, resident memory and start time of `root` and its descendants (None: no /proc,
    or `root` is gone)."""
    stats = _all_stats()
    if root not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    return TreeUsage(
        cpu_seconds=sum(stats[p].cpu_ticks for p in tree) / ticks,
        resident_bytes=sum(stats[p].rss_pages for p in tree) * page,
        start_time=_boot_time() + stats[root].start_ticks / ticks,
        runnable_threads=sum(_runnable_threads(p) for p in tree))


def service_root_pid() -> int:
    """The process whose tree is the service: gunicorn's master for an API worker (its
    metrics are summed over workers, PROMETHEUS_MULTIPROC_DIR), else this process."""
    from tradelab.app.api_metrics import multiprocess_dir

    return os.getppid() if multiprocess_dir() else os.getpid()


class ProcessTreeCollector:
    """The tradelab_process_* series of a service's process tree, read at scrape time."""

    def __init__(self, root_pid: Callable[[], int] = os.getpid,
                 memory_limit_bytes: int | None = None) -> None:
        self.root_pid = root_pid
        self.memory_limit_bytes = memory_limit_bytes

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        usage = tree_usage(self.root_pid())
        if usage is None:
            return
        yield CounterMetricFamily("tradelab_process_cpu_seconds",
                                  "CPU time (user + system) of the service's processes",
                                  value=usage.cpu_seconds)
        yield GaugeMetricFamily("tradelab_process_runnable_threads",
                                "Threads of the service's processes running or waiting for "
                                "a CPU (the scraping thread left out)",
                                value=usage.runnable_threads)
        yield GaugeMetricFamily("tradelab_process_resident_memory_bytes",
                                "Resident memory of the service's processes",
                                value=usage.resident_bytes)
        yield GaugeMetricFamily("tradelab_process_start_time_seconds",
                                "Unix time the service's (root) process started",
                                value=usage.start_time)
        if self.memory_limit_bytes:
            yield GaugeMetricFamily("tradelab_process_memory_limit_bytes",
                                    "The service's memory limit (memory.SERVICE setting)",
                                    value=self.memory_limit_bytes)


@dataclass(frozen=True)
class _Stat:
    ppid: int
    cpu_ticks: int
    start_ticks: int
    rss_pages: int


def _all_stats() -> dict[int, _Stat]:
    found: dict[int, _Stat] = {}
    try:
        entries = [e for e in os.listdir(PROC) if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            text = (PROC / entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # The command name is in parentheses and may hold spaces: split after it.
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 of proc(5): ppid is 4, utime 14, stime 15, starttime 22, rss 24
        found[int(entry)] = _Stat(ppid=int(fields[1]), cpu_ticks=int(fields[11]) + int(fields[12]),
                                  start_ticks=int(fields[19]), rss_pages=int(fields[21]))
    return found


def _runnable_threads(pid: int) -> int:
    me = threading.get_native_id() if pid == os.getpid() else None
    count = 0
    try:
        tids = os.listdir(PROC / str(pid) / "task")
    except OSError:
        return 0
    for tid in tids:
        if me is not None and tid == str(me):
            continue
        try:
            text = (PROC / str(pid) / "task" / tid / "stat").read_text()
        except OSError:
            continue
        count += text[text.rindex(")") + 2:].startswith("R")
    return count


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0
