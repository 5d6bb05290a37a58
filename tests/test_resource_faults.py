"""cpu-hog and memory-leak in the real services: a gunicorn API with two workers and a
`tradelab serve engine`, on a real PostgreSQL, read through their own /metrics (the
tradelab_process_* series the resource alerts use; tests/test_rules.py proves the alerts).

    pytest tests/test_resource_faults.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
from conftest import free_port
from support.api import ApiServer

from tradelab.app.process_metrics import tree_usage
from tradelab.chaos_state import ChaosStore

MiB = 2**20


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def metrics(url: str) -> str:
    return requests.get(url, timeout=15).text


def wait_until(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:g}s")


def test_memory_leak_fills_the_api_up_to_its_bound_and_frees_it(db, tmp_path):
    """The api's workers leak until the service holds 90% of memory.api, no more; its
    /metrics (whichever worker answers) sums gunicorn's master and workers, as /proc does;
    orders are still served; off, the memory goes back."""
    limit = 320 * MiB  # small, so the test leaks little; the api idles well under 80%
    with ApiServer(db.app_url, tmp_path, workers=2, threads=2,
                   env={"TRADELAB_MEMORY__API": "320m"}) as api:
        url = api.url + "/metrics"
        text = metrics(url)
        assert sample(text, "tradelab_process_memory_limit_bytes") == limit
        master = tree_usage(api.proc.pid)
        assert sample(text, "tradelab_process_start_time_seconds") == pytest.approx(
            master.start_time, abs=0.02)
        idle = sample(text, "tradelab_process_resident_memory_bytes")
        assert abs(idle - master.resident_bytes) < 16 * MiB  # the whole tree, not one worker
        assert idle < 0.7 * limit, f"the api idles at {idle / MiB:.0f} MiB"

        store = ChaosStore(api.chaos_file)
        store.enable("memory-leak", duration_s=120)
        wait_until("the api past 80% of its limit", lambda: sample(
            metrics(url), "tradelab_process_resident_memory_bytes") > 0.8 * limit, timeout=60)
        order = {"client_order_id": f"leak-{uuid.uuid4().hex[:8]}", "symbol": "AAPL",
                 "side": "BUY", "quantity": 1}
        assert requests.post(api.url + "/trades", json=order, timeout=15).status_code == 201
        time.sleep(3)  # the leak holds at its bound: 90% of the limit, plus a step a worker
        held = tree_usage(api.proc.pid).resident_bytes
        assert held < 0.9 * limit + 2 * 4 * MiB + 8 * MiB, f"{held / MiB:.0f} MiB"

        store.disable("memory-leak")
        wait_until("the leaked memory freed", lambda: tree_usage(
            api.proc.pid).resident_bytes < idle + 24 * MiB, timeout=15)


def test_cpu_hog_makes_the_engine_ask_for_cores_and_stops_when_off(db, tmp_path):
    """While cpu-hog is on, the engine's threads run or wait for a CPU (what the alert
    averages) whatever else the machine runs; off, they stop; the engine executes orders
    throughout."""
    port = free_port()
    chaos_file = tmp_path / "chaos.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env.update(TRADELAB_HOME=str(tmp_path / "lab"), TRADELAB_DATABASE_URL=db.app_url,
               TRADELAB_CHAOS_FILE=str(chaos_file))
    log = open(tmp_path / "engine.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "tradelab", "serve", "engine",
                             "--metrics-bind", f"127.0.0.1:{port}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"

    def runnable(seconds: float = 3.0) -> float:
        """tradelab_process_runnable_threads averaged over scrapes, as avg_over_time does."""
        values, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            values.append(sample(metrics(url), "tradelab_process_runnable_threads"))
            time.sleep(0.2)
        return sum(values) / len(values)

    try:
        wait_until("the engine's metrics", lambda: _answers(url), timeout=30)
        filled = 'tradelab_trades_processed_total{status="FILLED"}'
        before = runnable()
        ChaosStore(chaos_file).enable("cpu-hog", duration_s=60)
        time.sleep(1.5)  # the watcher looks every 0.5s
        hogging = runnable()
        done_before = sample(metrics(url), filled)
        wait_until("the engine to fill orders while hogging", lambda: sample(
            metrics(url), filled) > done_before, timeout=20)
        ChaosStore(chaos_file).disable("cpu-hog")
        time.sleep(1.5)
        after = runnable()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()
    print(f"runnable threads: before {before:.2f}, hog {hogging:.2f}, after {after:.2f}")
    assert before < 0.5 and after < 0.5, (before, after)
    assert hogging >= 1.5, (tmp_path / "engine.log").read_text()[-2000:]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
