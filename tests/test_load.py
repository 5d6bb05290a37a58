"""`tradelab load` against the real api (gunicorn + PostgreSQL), scraped by a real Prometheus.

Locust runs as child processes, exactly as for a user; this test process never imports
locust (gevent's monkey-patching would leak into the rest of the suite).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests
from conftest import free_port, make_database
from typer.testing import CliRunner

from tradelab import load
from tradelab.cli.main import app
from tradelab.loadtest import _profiles
from tradelab.loadtest._ledger import Ledger, read_ledger

pytestmark = pytest.mark.slow


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (requests.RequestException, OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _start_api(database_url: str, home: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env.update(TRADELAB_DATABASE_URL=database_url, TRADELAB_HOME=str(home), **settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradelab", "serve", "api", "--bind", f"127.0.0.1:{port}",
         "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait_for(lambda: requests.get(url + "/healthz", timeout=1).status_code == 200, 60,
              "the api to answer /healthz")
    return proc, url


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def api(pg, tmp_path_factory):
    """The real api on a fresh database: (url, database)."""
    database = make_database(pg)
    proc, url = _start_api(database.app_url, tmp_path_factory.mktemp("api-home"))
    yield url, database
    _stop(proc)


@pytest.fixture
def lab_without_master(lab_dir, monkeypatch):
    # The lab's own Locust master port must not answer, so runs are local.
    monkeypatch.setenv("TRADELAB_PORTS__LOCUST", str(free_port()))
    return lab_dir


def _count_trades(database, client_order_ids) -> int:
    with psycopg.connect(database.operator_url) as conn:
        return conn.execute("SELECT count(*) FROM trades WHERE client_order_id = ANY(%s)",
                            (list(client_order_ids),)).fetchone()[0]


def test_headless_run_at_20_users_matches_the_ledger_and_the_database(api, lab_without_master):
    url, database = api
    result = CliRunner().invoke(app, ["load", "--host", url, "--users", "20", "--spawn-rate",
                                      "20", "--duration", "10s", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)

    assert summary["requests"] >= 200, summary
    assert summary["failures"] == 0, summary
    assert summary["p50_ms"] is not None and summary["p95_ms"] >= summary["p50_ms"]
    assert set(summary["by_endpoint"]) == {"POST /trades", "GET /trades/[id]", "GET /",
                                           "GET /error"}  # /error's 500 is not a failure

    ledger = read_ledger(Path(summary["orders"]["ledger"]))
    assert ledger.run_id == summary["run_id"]
    assert len(ledger.acknowledged) == summary["orders"]["acknowledged"] > 50
    # Every order sent was answered (users finish their request in flight at the end)...
    assert ledger.unacknowledged == set()
    # ...each acknowledged order is a row, and each was one 201 in Locust's stats.
    assert _count_trades(database, ledger.acknowledged) == len(ledger.acknowledged)
    assert summary["by_endpoint"]["POST /trades"]["requests"] == len(ledger.acknowledged)
    with psycopg.connect(database.operator_url) as conn:
        rows = dict(conn.execute("SELECT client_order_id, id FROM trades").fetchall())
    assert {k: rows[k] for k in ledger.acknowledged} == ledger.acknowledged


def test_master_metrics_are_scraped_by_prometheus_and_stop_ends_the_run(api, lab_without_master,
                                                                        tmp_path):
    url, _database = api
    home = lab_without_master
    env = {**os.environ, "TRADELAB_HOME": str(home)}
    run = subprocess.Popen(
        [sys.executable, "-m", "tradelab", "load", "--host", url, "--users", "6",
         "--spawn-rate", "6", "--duration", "2m", "--workers", "2", "--profile", "steady",
         "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prometheus = None
    try:
        state_file = home / "state" / "load-run.json"
        master = _wait_for(lambda: json.loads(state_file.read_text())["url"], 60,
                           "the local Locust master")
        prometheus, prom_url = _start_prometheus(master, tmp_path)

        def query(expr):
            data = requests.get(prom_url + "/api/v1/query", params={"query": expr},
                                timeout=5).json()
            return data["data"]["result"]

        # Worker processes make the requests; the master's /metrics sums their tallies.
        acked = _wait_for(
            lambda: query('tradelab_load_orders_total{outcome="acknowledged"} > 0'), 60,
            "Prometheus to scrape acknowledged orders from the Locust master")
        assert float(acked[0]["value"][1]) > 0
        requests_total = query('locust_requests_total{name="/trades",method="POST"}')
        assert requests_total and float(requests_total[0]["value"][1]) > 0
        assert query('locust_state{state="running"} == 1')
        assert query("locust_workers == 2")

        status = CliRunner().invoke(app, ["load", "status", "--json"], env=env)
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["state"] in ("spawning", "running")

        stopped = CliRunner().invoke(app, ["load", "stop"], env=env)
        assert stopped.exit_code == 0, stopped.output
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        summary = json.loads(out)
        assert summary["requests"] > 0 and summary["failures"] == 0
        # The run's record stays for `load status`, which says it has ended.
        ended = CliRunner().invoke(app, ["load", "status"], env=env)
        assert ended.exit_code == 1 and "the last one (run " in ended.stderr, ended.output
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if prometheus is not None:
            _stop(prometheus)


def test_a_lab_master_is_driven_through_its_web_api(api, lab_without_master, tmp_path, monkeypatch):
    # A master and a worker as the lab runs them: every scenario, the class picker,
    # the worker's ledger in <lab>/state/load.
    url, database = api
    loadtest = Path(load.__file__).parent / "loadtest"
    web, bus = free_port(), free_port()
    env = {**os.environ, "TRADELAB_LOAD_LEDGER_DIR": str(lab_without_master / "state" / "load")}
    locust = [sys.executable, "-m", "locust", "-f", str(loadtest)]
    procs = [subprocess.Popen([*locust, "--master", "--class-picker", "--host", url,
                               "--web-host", "127.0.0.1", "--web-port", str(web),
                               "--master-bind-host", "127.0.0.1", "--master-bind-port",
                               str(bus), "--stop-timeout", "10"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([*locust, "--worker", "--master-port", str(bus)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    monkeypatch.setenv("TRADELAB_PORTS__LOCUST", str(web))
    monkeypatch.setenv("TRADELAB_PORTS__API", url.rsplit(":", 1)[1])
    try:
        master = f"http://127.0.0.1:{web}"
        _wait_for(lambda: requests.get(master + "/stats/requests", timeout=1).json()
                  .get("worker_count") == 1, 60, "the worker to join the master")
        result = CliRunner().invoke(app, ["load", "--users", "6", "--spawn-rate", "6",
                                          "--duration", "6s", "--profile", "spike", "--json"])
    finally:
        for proc in procs:
            _stop(proc)
    assert result.exit_code == 0, result.output
    assert "no 'spike' shape" not in result.stderr  # the master ran the profile's shape
    summary = json.loads(result.stdout)
    assert summary["mode"] == "lab" and summary["target"] == url
    assert summary["requests"] > 0 and summary["failures"] == 0
    acknowledged = summary["orders"]["acknowledged"]
    assert acknowledged == summary["by_endpoint"]["POST /trades"]["requests"] > 0
    ledger = read_ledger(Path(summary["orders"]["ledger"]))
    assert _count_trades(database, ledger.acknowledged) == acknowledged


def _start_prometheus(master_url: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.skip("prometheus is not installed")
    config = tmp_path / "prometheus.yml"
    target = master_url.removeprefix("http://")
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: locust\n    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom_url = f"http://127.0.0.1:{port}"
    _wait_for(lambda: requests.get(prom_url + "/-/ready", timeout=1).status_code == 200, 30,
              "Prometheus to be ready")
    return proc, prom_url


def test_a_503_is_retried_with_the_same_key_and_fails_the_run(pg, lab_without_master, tmp_path):
    # An api whose database does not answer: every order gets 503 + Retry-After.
    proc, url = _start_api(f"postgresql://nobody:x@127.0.0.1:{free_port()}/none",
                           tmp_path / "home", TRADELAB_API__DB_TIMEOUT_S="0.2")
    try:
        result = CliRunner().invoke(app, ["load", "--host", url, "--users", "2",
                                          "--spawn-rate", "2", "--duration", "3s", "--json"])
    finally:
        _stop(proc)
    assert result.exit_code == 1, result.output
    assert "of requests failed, more than --fail-ratio" in result.stderr
    summary = json.loads(result.stdout)
    ledger = read_ledger(Path(summary["orders"]["ledger"]))
    assert ledger.attempted and not ledger.acknowledged
    # Retries reuse the key: more POSTs than distinct orders.
    assert summary["by_endpoint"]["POST /trades"]["requests"] > len(ledger.attempted)


def test_an_unreachable_host_is_one_clear_line(lab_without_master):
    host = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["load", "--host", host, "--duration", "5s"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot reach the target {host}")


def test_status_and_stop_without_a_master_say_so(lab_without_master):
    for command in (["load", "status"], ["load", "stop"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1
        assert "no load test is running" in result.stderr


@pytest.mark.parametrize("profile", _profiles.PROFILES)
@pytest.mark.parametrize("users,duration", [(1, 10), (20, 60), (500, 3600)])
def test_profiles_are_scaled_to_the_duration_and_peak(profile, users, duration):
    ticks = [_profiles.tick(profile, t * duration / 100, users, 5, duration)
             for t in range(100)]
    counts = [count for count, _rate in ticks]
    assert all(1 <= c <= users for c in counts)
    assert max(counts) == users  # every profile reaches the peak
    assert all(rate >= 5 for _count, rate in ticks)
    assert _profiles.tick(profile, duration, users, 5, duration) is None  # then it ends
    if profile == "steady":
        assert set(counts) == {users}
    elif profile == "spike" and users >= 5:
        assert counts[0] < users and counts[50] == users and counts[-1] < users
    elif profile == "market-open" and users >= 5:
        opening, midday, closing = counts[5], counts[50], counts[95]
        assert opening == closing == users and midday < opening / 2


def test_shape_options_come_from_locusts_common_options():
    class Options:
        num_users, spawn_rate, run_time = 40, 4.0, 120

    assert _profiles.options(Options()) == (40, 4.0, 120.0)

    class Swarmed(Options):  # Locust 2.32 (the lab's image) puts /swarm's count here
        users = 8

    assert _profiles.options(Swarmed()) == (8, 4.0, 120.0)
    assert _profiles.options(None) == (_profiles.DEFAULT_USERS, 2.0,
                                       _profiles.DEFAULT_DURATION_S)


def test_ledger_merges_processes_and_skips_a_torn_line(tmp_path):
    first = Ledger(tmp_path, "run-1")
    first.attempted("a")
    first.acknowledged("a", 1, 201)
    first.attempted("b")
    first.close()
    other = tmp_path / "run-1" / "worker2-99.jsonl"
    other.write_text('{"event":"attempted","client_order_id":"c"}\n'
                     '{"event":"acknowledged","client_order_id":"c","trade_id":3,"code":200}\n'
                     '{"event":"attempted","client_ord')
    summary = read_ledger(tmp_path / "run-1")
    assert summary.attempted == {"a", "b", "c"}
    assert summary.acknowledged == {"a": 1, "c": 3}
    assert summary.unacknowledged == {"b"}
