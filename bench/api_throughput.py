"""Orders/s that `tradelab serve api` accepts, against bare Flask+gunicorn doing one INSERT.

    python bench/api_throughput.py                 # 16 clients, 5 rounds of 8 s per target
    python bench/api_throughput.py --connections 16 --rounds 7 --workers 2 --threads 4

Run by hand, not in CI. Starts its own PostgreSQL cluster (a temp dir, real server
binaries), two migrated databases, the real API (`python -m tradelab serve api`)
and the baseline (bench/bare_app.py) with the same gunicorn workers/threads and
pool size, then drives each with wrk (bench/orders.lua: a unique client_order_id
per request) at the same concurrency, in interleaved rounds, same machine, same run.
Accepted orders are counted in the database, not taken from wrk's word for it.
Prints both figures and their ratio (absolute numbers vary by machine; the ratio
is the figure to compare).
"""

from __future__ import annotations

import argparse
import json
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
from pathlib import Path

import psycopg
import requests

from tradelab.db.cluster import PostgresCluster
from tradelab.db.migrate import migrate

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def database(cluster: PostgresCluster, name: str, app_pw: str) -> str:
    with psycopg.connect(cluster.url("postgres", cluster.password), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(cluster.url("postgres", cluster.password, name), app_password=app_pw,
            operator_password=secrets.token_urlsafe(8))
    return cluster.url("tradelab_app", app_pw, name)


def count_trades(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM trades").fetchone()[0]


def drive(url: str, connections: int, duration: int, tag: str) -> dict:
    """wrk at `connections` concurrent clients for `duration` s; its JSON summary."""
    threads = min(connections, os.cpu_count() or 1)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
         "--timeout", "10s", "-s", str(HERE / "orders.lua"), url, "--", tag],
        capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    return json.loads(line.removeprefix("WRK_JSON "))


def measure(name: str, base: str, db_url: str, args, round_: int) -> dict:
    tag = "".join(c if c.isalnum() else "-" for c in name) + f"-r{round_}"  # in the ids
    before = count_trades(db_url)
    result = drive(base, args.connections, args.duration, tag)
    accepted = count_trades(db_url) - before
    seconds = result["duration_us"] / 1e6
    return {"target": name, "accepted": accepted, "seconds": round(seconds, 2),
            "orders_per_s": round(accepted / seconds, 1), "non_2xx": result["non_2xx"],
            "socket_errors": result["socket_errors"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=8, help="seconds per target and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")

    root = Path(tempfile.mkdtemp(prefix="tradelab-bench-"))
    cluster = PostgresCluster(root / "pg", port=free_port())
    cluster.password = secrets.token_urlsafe(12)
    cluster.init(cluster.password)
    cluster.start()
    procs: list[subprocess.Popen] = []
    try:
        app_pw = secrets.token_urlsafe(12)
        api_db, bare_db = database(cluster, "bench_api", app_pw), database(cluster, "bench_bare",
                                                                           app_pw)
        api_port, bare_port = free_port(), free_port()
        api_log = open(root / "api.log", "wb")  # noqa: SIM115 - lives as long as the API
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
        api = subprocess.Popen(
            [sys.executable, "-m", "tradelab", "serve", "api", "--bind",
             f"127.0.0.1:{api_port}", "--workers", str(args.workers),
             "--threads", str(args.threads)],
            env={**env, "TRADELAB_HOME": str(root / "lab"), "TRADELAB_DATABASE_URL": api_db,
                 "TRADELAB_API__DB_POOL_SIZE": str(args.pool_size),
                 "PROMETHEUS_MULTIPROC_DIR": str(root / "prom")},
            stdout=api_log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(api)
        bare = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(args.workers),
             "--threads", str(args.threads), "-b", f"127.0.0.1:{bare_port}",
             "--access-logfile", "/dev/null", "bare_app:app"],
            cwd=HERE, env={**env, "BENCH_DATABASE_URL": bare_db,
                           "BENCH_POOL_SIZE": str(args.pool_size)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(bare)
        wait_http(f"http://127.0.0.1:{api_port}/healthz", api)
        wait_http(f"http://127.0.0.1:{bare_port}/", bare)

        probe = requests.post(f"http://127.0.0.1:{api_port}/trades", timeout=10, json={
            "client_order_id": "probe", "symbol": "AAPL", "side": "BUY", "quantity": 1})
        if probe.status_code != 201:
            raise SystemExit(f"the API refused a valid order: {probe.status_code} {probe.text}"
                             f"\n{(root / 'api.log').read_text()[-2000:]}")
        targets = {"tradelab serve api": (f"http://127.0.0.1:{api_port}", api_db),
                   "bare flask+gunicorn": (f"http://127.0.0.1:{bare_port}", bare_db)}
        for name, (base, _) in targets.items():  # pools filled, code paths warm
            drive(base, args.connections, 2, "warmup-" + name.split()[0])
        # Interleaved rounds (A B, B A, A B, ...): a neighbour's burst of CPU use on a
        # shared machine then hurts both targets, not one; medians damp the rest.
        results: dict[str, list[dict]] = {name: [] for name in targets}
        ratios = []
        for round_ in range(args.rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            got = {}
            for name in order:
                base, db_url = targets[name]
                got[name] = measure(name, base, db_url, args, round_)
                print(json.dumps({"round": round_, **got[name]}), flush=True)
                results[name].append(got[name])
            ratios.append(got["tradelab serve api"]["orders_per_s"]
                          / got["bare flask+gunicorn"]["orders_per_s"])
        print(f"\n{args.connections} clients, {args.workers} workers x {args.threads} threads, "
              f"pool {args.pool_size}, {os.cpu_count()} CPUs (database and load on the same "
              f"machine), {args.rounds} interleaved rounds of {args.duration} s; medians:")
        for name, rounds in results.items():
            rate = statistics.median(r["orders_per_s"] for r in rounds)
            p50 = statistics.median(r["p50_ms"] for r in rounds)
            p99 = statistics.median(r["p99_ms"] for r in rounds)
            errors = sum(r["non_2xx"] + r["socket_errors"] for r in rounds)
            print(f"{name:<20}: {rate:>8.1f} orders/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                  f"{errors} errors)")
        print(f"ratio api/bare      : {statistics.median(ratios):.2f} "
              f"(per round: {', '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
