"""A real `tradelab serve api` (gunicorn, N workers) in a subprocess, for tests.

    with ApiServer(db.app_url, tmp_path, workers=2) as api:
        requests.post(api.url + "/trades", json={...})
        api.chaos_file.write_text(...)     # the server's TRADELAB_CHAOS_FILE
        api.output()                       # what it logged so far

Other test files may use it too (load, observability): it starts the same
command a user runs, on a free loopback port, and stops it (and its workers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import free_port


class ApiServer:
    def __init__(self, database_url: str, workdir: Path, workers: int = 2, threads: int = 4,
                 env: dict[str, str] | None = None, startup_timeout: float = 30) -> None:
        self.database_url = database_url
        self.workdir = Path(workdir)
        self.workers = workers
        self.threads = threads
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chaos_file = self.workdir / "chaos.json"
        self.metrics_dir = self.workdir / "prom"
        self.log_file = self.workdir / "api.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ApiServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
        env.update({
            "TRADELAB_HOME": str(self.workdir / "lab"),
            "TRADELAB_DATABASE_URL": self.database_url,
            "TRADELAB_CHAOS_FILE": str(self.chaos_file),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            **self.extra_env,
        })
        self._log = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tradelab", "serve", "api",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
             "--threads", str(self.threads)],
            cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"api exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"api did not answer /healthz in time:\n{self.output()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: gunicorn's quick shutdown (SIGTERM would wait for keep-alive clients).
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def worker_pids(self) -> set[int]:
        """The gunicorn workers' pids (children of the master)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in path.read_text().split()} if path.exists() else set()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
