"""What every benchmark of the suite shares: the run, its PostgreSQL, timing and results.

    run = Run(quick=False)                      # temp dir, sizes, lazily a PostgreSQL
    url = run.database("bench_api")             # a migrated database, app role's URL
    fig = Figure("api", "API: durable orders/s")
    fig.row("serve api, 16 clients", 1480, "orders/s", baseline=2300)
    run.close()

A Figure is one section of docs/benchmarks.md: rows of measured values, each with
the baseline measured in the same run and their ratio, what limits the figure, and
a reason when it was skipped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without TRADELAB_* (the user's lab stays out of it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the server for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; the median for q=50."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(names: list[str], rounds: int) -> list[list[str]]:
    """The order of targets in each round: rotated, so that a neighbour's burst of CPU
    on a shared machine lands on every target in turn, not always on the same one."""
    return [names[r % len(names):] + names[:r % len(names)] for r in range(rounds)]


class BenchError(Exception):
    """A benchmark could not run; its figure is reported as failed with this message."""


@dataclass
class Row:
    what: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


@dataclass
class Figure:
    name: str
    title: str
    goal: str = ""
    limits: str = ""
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # could not run here (no Docker, not built yet): why
    failed: str | None = None  # tried and broke: the error
    seconds: float = 0.0

    def row(self, what: str, value: float, unit: str, baseline: float | None = None,
            baseline_name: str | None = None, note: str = "") -> Row:
        self.rows.append(Row(what, value, unit, baseline, baseline_name, note))
        return self.rows[-1]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "goal": self.goal,
                "limits": self.limits, "skipped": self.skipped, "failed": self.failed,
                "notes": self.notes,
                "seconds": round(self.seconds, 1),
                "rows": [{"what": r.what, "value": r.value, "unit": r.unit,
                          "baseline": r.baseline, "baseline_name": r.baseline_name,
                          "ratio": None if r.ratio is None else round(r.ratio, 3),
                          "note": r.note} for r in self.rows]}


class Run:
    """One run of the suite: its temp dir, its sizes and one PostgreSQL for all figures."""

    def __init__(self, quick: bool = False, log=None) -> None:
        self.quick = quick
        self.root = Path(tempfile.mkdtemp(prefix="tradelab-bench-"))
        self._cluster = None
        self.app_password = secrets.token_urlsafe(12)
        self.operator_password = secrets.token_urlsafe(12)
        self._procs: list[subprocess.Popen] = []
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    # -- PostgreSQL ---------------------------------------------------------------------
    @property
    def cluster(self):
        if self._cluster is None:
            from tradelab.db.cluster import PostgresCluster

            cluster = PostgresCluster(self.root / "pg", port=free_port())
            cluster.password = secrets.token_urlsafe(12)
            cluster.init(cluster.password)
            cluster.start()
            self._cluster = cluster
        return self._cluster

    def admin_url(self, name: str = "postgres") -> str:
        return self.cluster.url("postgres", self.cluster.password, name)

    def database(self, name: str) -> str:
        """A fresh migrated database `name`; the application role's URL to it."""
        import psycopg

        from tradelab.db.migrate import migrate

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        migrate(self.admin_url(name), app_password=self.app_password,
                operator_password=self.operator_password)
        return self.cluster.url("tradelab_app", self.app_password, name)

    def operator_url(self, name: str) -> str:
        return self.cluster.url("tradelab_operator", self.operator_password, name)

    # -- processes ------------------------------------------------------------------------
    def spawn(self, cmd: list[str], log_name: str, **kwargs) -> subprocess.Popen:
        """A server for the rest of the run (its own session, so it stops with its
        children); its output goes to <root>/<log_name>.log."""
        out = open(self.root / f"{log_name}.log", "wb")  # noqa: SIM115 - lives with the proc
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def log_tail(self, log_name: str, chars: int = 1500) -> str:
        path = self.root / f"{log_name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        for proc in self._procs:
            self.stop(proc)
        if self._cluster is not None:
            self._cluster.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
