"""`tradelab load --detach`: the run goes on after the command returns, `load status`
follows it, it ends on time (or at `load stop`) and its ledger is complete.

Real api (gunicorn on the suite's PostgreSQL), real Locust processes started by
`python -m tradelab load` in a subprocess, exactly as a user types it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from test_load import _count_trades, _start_api, _stop, _wait_for

from tradelab.loadtest._ledger import read_ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(pg, tmp_path_factory):
    from conftest import make_database

    database = make_database(pg)
    proc, url = _start_api(database.app_url, tmp_path_factory.mktemp("api-home"))
    yield url, database
    _stop(proc)


@pytest.fixture
def env(lab_dir):
    # The lab's own Locust master port must not answer: the run is local processes.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")},
            "TRADELAB_HOME": str(lab_dir), "TRADELAB_PORTS__LOCUST": str(free_port())}


def tradelab(env, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradelab", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def status(env) -> dict:
    result = tradelab(env, "load", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_detached_run_outlives_the_command_and_ends_on_time(api, env):
    url, database = api
    started_at = time.monotonic()
    result = tradelab(env, "load", "--host", url, "--users", "4", "--spawn-rate", "4",
                      "--duration", "8s", "--detach", "--json")
    returned_after = time.monotonic() - started_at
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout)
    assert started["kind"] == "local" and started["state"] in ("spawning", "running")
    assert started["detached"] is True and started["remaining_s"] > 0
    assert returned_after < 8, "the command held the terminal for the whole run"

    now = _wait_for(lambda: (s := status(env))["requests"] > 20 and s, 30, "requests")
    assert now["run_id"] == started["run_id"] and now["target"] == url
    assert now["users"] == 4 and now["failures"] == 0 and now["rps"] > 0
    assert now["elapsed_s"] + now["remaining_s"] == pytest.approx(8, abs=1)

    # It ends on its own at --duration; then status says it has ended.
    _wait_for(lambda: status(env)["state"] == "stopped", 30, "the run to end")
    assert status(env)["remaining_s"] == 0
    ledger = read_ledger(Path(started["ledger"]))
    assert ledger.run_id == started["run_id"] and ledger.acknowledged
    assert ledger.unacknowledged == set()
    assert _count_trades(database, ledger.acknowledged) == len(ledger.acknowledged)

    stop = tradelab(env, "load", "stop")  # the lingering master ends at once
    assert stop.returncode == 0, stop.stderr
    gone = tradelab(env, "load", "status")
    assert gone.returncode == 1 and "no load test is running" in gone.stderr
    assert started["run_id"] in gone.stderr


def test_load_stop_ends_a_detached_run_and_its_processes(api, env):
    url, database = api
    result = tradelab(env, "load", "--host", url, "--users", "3", "--spawn-rate", "3",
                      "--duration", "10m", "--workers", "1", "--detach")
    assert result.returncode == 0, result.stderr
    assert "runs in the background" in result.stdout
    assert "tradelab load status" in result.stdout
    state = json.loads((Path(env["TRADELAB_HOME"]) / "state" / "load-run.json").read_text())
    _wait_for(lambda: status(env)["requests"] > 10, 60, "requests")
    assert status(env)["workers"] == 1

    second = tradelab(env, "load", "--host", url, "--duration", "5s", "--detach")
    assert second.returncode == 1 and "already running" in second.stderr

    stop = tradelab(env, "load", "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"stopped the load test {state['run_id']}" in stop.stdout
    for pid in state["pids"]:
        _wait_for(lambda pid=pid: not _running(pid), 20, f"Locust process {pid} to end")
    ledger = read_ledger(Path(env["TRADELAB_HOME"]) / "state" / "load" / state["run_id"])
    assert ledger.acknowledged and ledger.unacknowledged == set()
    assert _count_trades(database, ledger.acknowledged) == len(ledger.acknowledged)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def test_a_lab_that_is_down_is_one_clean_line(env):
    env = {**env, "TRADELAB_PORTS__API": str(free_port())}
    for args in (["load", "--duration", "5s"], ["load", "--detach"]):
        result = tradelab(env, *args)
        assert result.returncode == 1
        line, = result.stderr.splitlines()
        assert line.startswith("error: cannot reach the target http://127.0.0.1:")
        assert "(Connection refused); start the lab with `tradelab up`" in line \
            or "Connection refused); start" in line
        assert '")' not in line and "))" not in line, line
