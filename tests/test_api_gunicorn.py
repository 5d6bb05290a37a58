"""`tradelab serve api` as a real gunicorn with several workers, on a real PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from support.api import ApiServer
from typer.testing import CliRunner

from tradelab.chaos_state import ChaosStore
from tradelab.cli.main import app as cli

ORDER = {"symbol": "NVDA", "side": "BUY", "quantity": 2, "limit_price": 120.5}


def post(api, body, timeout=15):
    return requests.post(api.url + "/trades", json=body, timeout=timeout)


def unique(prefix="t"):
    return {**ORDER, "client_order_id": f"{prefix}-{uuid.uuid4().hex[:16]}"}


def sample(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_concurrent_replays_create_exactly_one_trade(db, tmp_path):
    threads = 24
    with ApiServer(db.app_url, tmp_path, workers=2, threads=4) as api:
        for round_ in range(4):
            body = {**ORDER, "client_order_id": f"race-{round_}"}
            barrier = threading.Barrier(threads)

            def submit(_, body=body, barrier=barrier):
                barrier.wait()
                return post(api, body)

            with ThreadPoolExecutor(threads) as pool:
                answers = list(pool.map(submit, range(threads)))
            codes = sorted(r.status_code for r in answers)
            assert codes == [200] * (threads - 1) + [201], codes
            assert len({r.json()["id"] for r in answers}) == 1
    with psycopg.connect(db.admin_url) as conn:
        per_key = conn.execute("SELECT client_order_id, count(*) FROM trades GROUP BY 1 "
                               "ORDER BY 1").fetchall()
        events = conn.execute("SELECT count(*) FROM trade_events").fetchone()[0]
    assert per_key == [(f"race-{i}", 1) for i in range(4)]
    assert events == 4


INDEX_OK = 'tradelab_http_requests_total{code="200",method="GET",route="/"}'


def per_worker_counts(api, tmp_path, key: str) -> dict[int, float]:
    """Each worker's own value of `key`, read from that worker's file alone."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for pid in api.worker_pids():
        single = tmp_path / f"one-{pid}-{uuid.uuid4().hex[:6]}"
        single.mkdir()
        for f in api.metrics_dir.glob(f"counter_{pid}.db"):
            shutil.copy(f, single)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(single))
        counts[pid] = sample(generate_latest(registry).decode(), key) or 0
    return counts


def test_metrics_are_summed_over_workers_and_pass_promtool(db, tmp_path):
    with ApiServer(db.app_url, tmp_path, workers=2, threads=2) as api:
        def hit(_):  # a new connection each time, so the workers share the requests
            return requests.get(api.url + "/", timeout=15).status_code

        # Send batches until more than one worker has answered (which one accepts a
        # connection is the kernel's choice), so the total really is a sum.
        n = 0
        for _ in range(30):
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(hit, range(40))) == {200}
            n += 40
            per_worker = per_worker_counts(api, tmp_path, INDEX_OK)
            if sum(1 for c in per_worker.values() if c > 0) >= 2:
                break
        for _ in range(3):
            assert post(api, unique()).status_code == 201
        text = requests.get(api.url + "/metrics", timeout=15).text
    assert sum(1 for c in per_worker.values() if 0 < c < n) >= 2, per_worker
    assert sum(per_worker.values()) == n, per_worker
    assert sample(text, INDEX_OK) == n
    assert sample(text, 'tradelab_orders_received_total{source="api"}') == 3
    assert sample(text, 'tradelab_http_request_duration_seconds_count{method="GET",route="/"}') \
        == n
    assert 'le="0.25"' in text and "tradelab_db_up 1.0" in text
    assert sample(text, "tradelab_db_pool_size") >= 1
    for name in ("tradelab_db_pool_available", "tradelab_db_pool_waiting",
                 'tradelab_chaos_active{fault="api-errors"}', "tradelab_build_info{version="):
        assert name in text

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_chaos_reaches_running_workers_without_restart(db, tmp_path):
    with ApiServer(db.app_url, tmp_path, workers=2) as api:
        assert post(api, unique()).status_code == 201
        store = ChaosStore(api.chaos_file)

        store.enable("api-errors", rate=1.0)
        started = time.monotonic()
        streak, deadline = 0, started + 15
        while streak < 20 and time.monotonic() < deadline:
            r = post(api, unique())
            streak = streak + 1 if r.status_code == 500 else 0
        took = time.monotonic() - started
        assert streak >= 20, f"chaos not applied by every worker within 15 s ({took:.1f}s)"
        assert r.json()["error"] == "chaos_injected"
        # The worker answering /metrics may not have served any of those orders: its
        # reader looks at the file at most every 0.5 s, so give it the contract's 2 s.
        text = metrics_when(api, 'tradelab_chaos_active{fault="api-errors"}', 1.0)
        assert sample(text, 'tradelab_http_requests_total{code="500",method="POST",'
                            'route="/trades"}') >= 20

        store.disable("api-errors")
        streak, deadline = 0, time.monotonic() + 15
        while streak < 20 and time.monotonic() < deadline:
            streak = streak + 1 if post(api, unique()).status_code == 201 else 0
        assert streak >= 20, "orders still failing after chaos off"
        metrics_when(api, 'tradelab_chaos_active{fault="api-errors"}', 0.0)
    print(f"api-errors picked up by all workers in {took:.2f} s")


def metrics_when(api, series: str, value: float, within_s: float = 2.5) -> str:
    """/metrics once `series` shows `value` (asserted within `within_s`)."""
    deadline = time.monotonic() + within_s
    while True:
        text = requests.get(api.url + "/metrics", timeout=15).text
        if sample(text, series) == value or time.monotonic() > deadline:
            assert sample(text, series) == value, f"{series} is not {value} after {within_s} s"
            return text
        time.sleep(0.1)


def test_api_latency_chaos_slows_orders(db, tmp_path):
    with ApiServer(db.app_url, tmp_path, workers=1) as api:
        ChaosStore(api.chaos_file).enable("api-latency", latency_ms=400)
        time.sleep(1.2)  # readers look at the file at most every 0.5 s
        for _ in range(3):
            assert requests.get(api.url + "/", timeout=15).status_code == 200
        text = requests.get(api.url + "/metrics", timeout=15).text
    fast = sample(text, 'tradelab_http_request_duration_seconds_bucket{le="0.25",method="GET",'
                        'route="/"}')
    total = sample(text, 'tradelab_http_request_duration_seconds_count{method="GET",route="/"}')
    assert (fast, total) == (0.0, 3.0)


def test_database_outage_is_503_then_recovers_without_restart(db, tmp_path):
    env = {"TRADELAB_API__DB_TIMEOUT_S": "1"}
    with ApiServer(db.app_url, tmp_path, workers=2, env=env) as api:
        assert post(api, unique()).status_code == 201
        # Meanwhile a client keeps ordering: through the stop and the restart it must
        # only ever see 201 or 503, never a 500 from a connection broken mid-use.
        background, stop_background = [], threading.Event()

        def keep_ordering():
            while not stop_background.is_set():
                background.append(post(api, unique()).status_code)

        client = threading.Thread(target=keep_ordering, daemon=True)
        client.start()
        try:
            time.sleep(0.5)
            db.cluster.stop()
            asked = time.monotonic()
            r = post(api, unique(), timeout=15)
            answered_in = time.monotonic() - asked
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "db_unavailable"
            assert int(r.headers["Retry-After"]) >= 1
            assert requests.get(api.url + "/readyz", timeout=15).status_code == 503
            assert requests.get(api.url + "/healthz", timeout=15).status_code == 200
            text = requests.get(api.url + "/metrics", timeout=15).text
            assert sample(text, "tradelab_db_up") == 0.0
        finally:
            db.cluster.start()
            db.cluster.wait_ready()
        restarted = time.monotonic()
        codes, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            codes.append(post(api, unique()).status_code)
            if codes[-3:] == [201, 201, 201]:
                break
            time.sleep(0.2)
        assert codes[-3:] == [201, 201, 201], codes
        assert set(codes) <= {201, 503}, codes
        recovered_in = time.monotonic() - restarted
        stop_background.set()
        client.join(timeout=30)
        assert set(background) <= {201, 503} and 503 in background, set(background)
        assert requests.get(api.url + "/readyz", timeout=15).status_code == 200
        log = api.output()
    print(f"503 after {answered_in:.2f} s; 201 again {recovered_in:.2f} s after the restart")
    assert '"event": "db_unavailable"' in log
    assert '"level": "error"' not in log, log[-3000:]


def test_serve_api_refuses_bad_bind_and_taken_port(lab_dir):
    result = CliRunner().invoke(cli, ["serve", "api", "--bind", "nowhere"])
    assert result.exit_code == 1
    assert "invalid --bind 'nowhere'" in result.output
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "api", "--bind", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
