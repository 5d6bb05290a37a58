"""Figure 1: durable orders/s of `tradelab serve api` against bare Flask+gunicorn.

    python -m bench --only api

Two migrated databases on the run's PostgreSQL; the real API (`python -m tradelab
serve api`) and bench/bare_app.py under gunicorn with the same workers, threads and
pool size. wrk (bench/orders.lua: a unique client_order_id per request) drives, at
16 and 64 clients, in interleaved rounds: the API, the bare one-INSERT app and the
bare app's GET /hello (no database). Accepted orders are counted in the database,
not taken from wrk's word for it; p50/p99 are wrk's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from bench.harness import (
    HERE,
    BenchError,
    Figure,
    Run,
    clean_env,
    free_port,
    interleaved,
    median,
    wait_http,
)

WORKERS, THREADS, POOL = 2, 4, 4
API, INSERT, HELLO = "tradelab serve api", "bare insert", "bare hello"

LIMITS = """\
The API does, per order, what the bare app skips: strict pydantic validation, the
idempotent insert of the trade plus its `received` event, a chaos-state check, the
multiprocess metrics (a histogram and two counters written to mmap files) and one JSON
log line. With 2 workers x 4 threads on 2 shared cores the work is CPU-bound in Python
(GIL per worker), and each order waits for its own COMMIT (one WAL flush per order):
see "Where the time goes" below for the profile."""


def count_trades(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM trades").fetchone()[0]


def wrk(url: str, connections: int, seconds: int, tag: str, hello: bool = False) -> dict:
    """wrk at `connections` clients for `seconds`; its WRK_JSON summary."""
    threads = min(connections, os.cpu_count() or 1)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
           "--timeout", "10s", "-s", str(HERE / "orders.lua"), url, "--", tag]
    out = subprocess.run(cmd + (["hello"] if hello else []), capture_output=True, text=True,
                         check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    return json.loads(line.removeprefix("WRK_JSON "))


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a server and its live workers."""
    import psutil

    total = 0.0
    try:
        master = psutil.Process(pid)
        for proc in [master, *master.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def start_servers(run: Run) -> dict[str, tuple[str, str | None, int]]:
    """The API and the bare app, ready: {target: (base URL, database URL or None, server
    pid)}."""
    api_db, bare_db = run.database("bench_api"), run.database("bench_bare")
    api_port, bare_port = free_port(), free_port()
    api = run.spawn(
        [sys.executable, "-m", "tradelab", "serve", "api", "--bind", f"127.0.0.1:{api_port}",
         "--workers", str(WORKERS), "--threads", str(THREADS)], "api",
        env=clean_env(TRADELAB_HOME=str(run.root / "lab-api"), TRADELAB_DATABASE_URL=api_db,
                      TRADELAB_API__DB_POOL_SIZE=str(POOL),
                      PROMETHEUS_MULTIPROC_DIR=str(run.root / "prom-api")))
    bare = run.spawn(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(WORKERS), "--threads",
         str(THREADS), "-b", f"127.0.0.1:{bare_port}", "--access-logfile", "/dev/null",
         "bare_app:app"], "bare", cwd=HERE,
        env=clean_env(BENCH_DATABASE_URL=bare_db, BENCH_POOL_SIZE=str(POOL)))
    wait_http(f"http://127.0.0.1:{api_port}/healthz", api)
    wait_http(f"http://127.0.0.1:{bare_port}/hello", bare)
    import requests

    probe = requests.post(f"http://127.0.0.1:{api_port}/trades", timeout=10, json={
        "client_order_id": "probe", "symbol": "AAPL", "side": "BUY", "quantity": 1})
    if probe.status_code != 201:
        raise BenchError(f"the API refused a valid order: {probe.status_code} {probe.text}"
                         f"\n{run.log_tail('api')}")
    return {API: (f"http://127.0.0.1:{api_port}", api_db, api.pid),
            INSERT: (f"http://127.0.0.1:{bare_port}", bare_db, bare.pid),
            HELLO: (f"http://127.0.0.1:{bare_port}", None, bare.pid)}


def measure(target: str, base: str, db_url: str | None, pid: int, connections: int,
            seconds: int, tag: str) -> dict:
    """One wrk run against a target: its rate, errors, latency, and the server's CPU
    per request (the figure a neighbour's burst of CPU distorts least)."""
    before = count_trades(db_url) if db_url else 0
    cpu_before = server_cpu_s(pid)
    result = wrk(base, connections, seconds, tag, hello=db_url is None)
    cpu = server_cpu_s(pid) - cpu_before
    elapsed = result["duration_us"] / 1e6
    done = count_trades(db_url) - before if db_url else result["requests"] - result["non_2xx"]
    return {"target": target, "connections": connections, "per_s": done / elapsed,
            "errors": result["non_2xx"] + result["socket_errors"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"], "cpu_ms": 1000 * cpu / max(done, 1)}


def run_figure(run: Run) -> Figure:
    fig = Figure("api", "API: durable orders/s against bare Flask+gunicorn",
                 goal="at 16 clients, 0.8x bare insert or better (stretch 1.0x)", limits=LIMITS)
    if not shutil.which("wrk"):
        fig.skipped = "wrk not found (apt-get install wrk)"
        return fig
    targets = start_servers(run)
    seconds, rounds = run.size(6, 1), run.size(7, 1)
    for name, (base, db_url, _pid) in targets.items():  # pools filled, code paths warm
        wrk(base, 16, run.size(2, 1), "warmup-" + name.split()[-1], hello=db_url is None)
    for connections in run.size((16, 64), (16,)):
        got: dict[str, list[dict]] = {t: [] for t in targets}
        ratios, cpu_ratios = [], []
        for r, order in enumerate(interleaved(list(targets), rounds)):
            row = {}
            for target in order:
                tag = f"{target.split()[-1]}-c{connections}-r{r}"
                row[target] = measure(target, *targets[target], connections, seconds, tag)
                got[target].append(row[target])
                run.log(f"  api {connections} clients round {r}: {target} "
                        f"{row[target]['per_s']:.0f}/s")
            ratios.append(row[API]["per_s"] / row[INSERT]["per_s"])
            cpu_ratios.append(row[API]["cpu_ms"] / row[INSERT]["cpu_ms"])
        med = {t: median([x["per_s"] for x in got[t]]) for t in targets}
        for target in targets:
            unit = "requests/s" if target == HELLO else "orders/s"
            p50 = median([x["p50_ms"] for x in got[target]])
            p99 = median([x["p99_ms"] for x in got[target]])
            errors = sum(x["errors"] for x in got[target])
            cpu_ms = median([x["cpu_ms"] for x in got[target]])
            against_insert = target == API
            fig.row(f"{target}, {connections} clients", round(med[target], 1), unit,
                    baseline=round(med[INSERT], 1) if against_insert else None,
                    baseline_name=INSERT if against_insert else None,
                    note=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {errors} errors, "
                         f"server CPU {cpu_ms:.2f} ms per request")
        fig.row(f"serve api against bare hello, {connections} clients", round(med[API], 1),
                "orders/s", baseline=round(med[HELLO], 1), baseline_name=HELLO)
        fig.notes.append(f"{connections} clients: api/bare-insert per round "
                         + ", ".join(f"{x:.2f}" for x in ratios)
                         + f" (median {median(ratios):.2f}); server CPU per order, "
                         "api/bare-insert: " + ", ".join(f"{x:.2f}" for x in cpu_ratios)
                         + f" (median {median(cpu_ratios):.2f})")
    fig.notes.append(f"{WORKERS} gunicorn workers x {THREADS} threads, pool {POOL}, "
                     f"{rounds} interleaved rounds of {seconds} s per target; database, "
                     "servers and wrk share the machine's cores.")
    return fig
