"""The load ledger: what it records, what it refuses, and that it lets go of its files.

The Locust test runs a real Locust process with its web UI (as the lab's master runs)
against a port where nothing listens: every order is attempted and unanswered, which is
all a ledger needs. This test process never imports locust (gevent's monkey-patching).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

from tradelab import load
from tradelab.loadtest._ledger import Ledger, check_run_id, read_ledger, run_dirs


def test_an_order_is_recorded_with_its_body_and_its_missing_answer(tmp_path):
    ledger = Ledger(tmp_path, "run-1")
    order = {"client_order_id": "load-a", "symbol": "AAPL", "side": "BUY", "quantity": 7,
             "limit_price": 101.25}
    ledger.attempted(order)
    ledger.attempted({**order, "client_order_id": "load-b", "limit_price": None})
    ledger.acknowledged("load-a", 11, 201)
    ledger.acknowledged("load-a", 12, 200)  # a replay answered with another trade
    ledger.unanswered("load-b", 0, "ConnectionResetError")
    ledger.close()
    summary = read_ledger(tmp_path / "run-1")
    assert summary.orders["load-a"] == {"symbol": "AAPL", "side": "BUY", "quantity": 7,
                                        "limit_price": 101.25}
    assert summary.orders["load-b"]["limit_price"] is None
    assert summary.acknowledged == {"load-a": 11}
    assert summary.acknowledgements == {"load-a": {11, 12}}
    assert summary.unanswered == {"load-b": {"code": 0, "error": "ConnectionResetError"}}
    assert summary.unacknowledged == {"load-b"}
    assert summary.first_ts <= summary.last_ts


def test_an_old_ledger_without_bodies_is_still_read(tmp_path):
    run = tmp_path / "20250101T000000Z-ab12"
    run.mkdir()
    (run / "host-1.jsonl").write_text(
        '{"event":"attempted","client_order_id":"load-a","ts":1.0}\n'
        '{"event":"acknowledged","client_order_id":"load-a","trade_id":3,"code":201,"ts":2.0}\n'
        '{"event":"attempted","client_order_id":"load-b","ts":3.0}\n')
    summary = read_ledger(run)
    assert summary.attempted == {"load-a", "load-b"}
    assert summary.acknowledged == {"load-a": 3}
    assert summary.orders == {}
    assert run_dirs(tmp_path) == [run]


@pytest.mark.parametrize("run_id", ["../escaped", "..", ".hidden", "a/b", "", "x" * 101,
                                    "run id", "/abs"])
def test_a_run_id_that_is_not_a_safe_folder_name_is_refused(tmp_path, run_id):
    with pytest.raises(ValueError, match="invalid run id"):
        Ledger(tmp_path / "load", run_id)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        check_run_id(run_id)


def _open_ledgers(pid: int) -> list[str]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith(".jsonl"):
            found.append(target)
    return found


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (requests.RequestException, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slow
def test_a_web_form_run_id_stays_in_the_ledger_folder_and_files_close_when_runs_stop(
        tmp_path):
    ledger_dir = tmp_path / "lab" / "state" / "load"
    web = free_port()
    env = {**os.environ, "TRADELAB_LOAD_LEDGER_DIR": str(ledger_dir)}
    env.pop("TRADELAB_LOAD_RUN_ID", None)
    trader = Path(load.__file__).parent / "loadtest" / "trader.py"
    # A port held bound but not listening refuses every connection at once, and no other
    # process (a frozen server left by another test, say) can take it meanwhile.
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(trader), "--host",
         f"http://127.0.0.1:{refusing.getsockname()[1]}", "--web-host", "127.0.0.1",
         "--web-port", str(web),
         "--stop-timeout", "5"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    master = f"http://127.0.0.1:{web}"
    try:
        _wait_for(lambda: requests.get(master + "/stats/requests", timeout=1).ok, 60,
                  "Locust's web UI")
        for run_id in ("../../escaped", "second-run"):
            before = len(list(tmp_path.rglob("*.jsonl")))  # counted before the run starts
            answer = requests.post(master + "/swarm", data={
                "user_count": 2, "spawn_rate": 2, "tradelab_run_id": run_id}, timeout=10)
            assert answer.json()["success"], answer.text
            _wait_for(lambda n=before: len(list(tmp_path.rglob("*.jsonl"))) > n, 30,
                      "this run's ledger")
            time.sleep(1)
            requests.post(master + "/stop", timeout=10)
            _wait_for(lambda: requests.get(master + "/stats/requests", timeout=1)
                      .json()["state"] == "stopped", 30, "the run to stop")
        # A path from the form never leaves the ledger folder: a fresh id is used instead.
        assert not (tmp_path / "lab" / "escaped").exists()
        names = [p.name for p in run_dirs(ledger_dir)]
        assert len(names) == 2 and "second-run" in names, names
        assert all(read_ledger(ledger_dir / n).attempted for n in names)
        # Both runs stopped: the long-lived process holds no ledger file open.
        _wait_for(lambda: not _open_ledgers(proc.pid), 15, "the ledgers to be closed")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        refusing.close()
    lines = [json.loads(x) for p in run_dirs(ledger_dir) for f in p.glob("*.jsonl")
             for x in f.read_text().splitlines()]
    unanswered = [x for x in lines if x["event"] == "unanswered"]
    assert unanswered and all(x["code"] == 0 for x in unanswered)  # nothing listened
