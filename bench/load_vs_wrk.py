"""Requests/s `tradelab load` generates against a cheap endpoint, against wrk on the same one.

    python bench/load_vs_wrk.py                     # 64 connections, 3 rounds of 15 s each
    python bench/load_vs_wrk.py --connections 64 --rounds 5 --seconds 20 --load-workers 2

Run by hand, not in CI. Starts the real API (`python -m tradelab serve api`) and drives
its cheapest route, GET / (no database call, so no database is started), alternately
with wrk (`-t <load-workers> -c <connections>`) and with `tradelab load --user-type index`
(IndexUser: GET / with no think time, `--workers <load-workers>` Locust worker processes,
one user per wrk connection), in interleaved rounds (wrk, load, load, wrk, ...) so both
see the same machine. Both load generators share the machine's cores with the api, as
they would on a laptop. Prints each round as a JSON line, then the medians and the
ratio load/wrk: the share of wrk's throughput that Locust reaches on the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(workers: int, threads: int, home: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    # GET / never touches the database; a closed port keeps the benchmark self-contained.
    env.update(TRADELAB_HOME=home,
               TRADELAB_DATABASE_URL=f"postgresql://bench:x@127.0.0.1:{free_port()}/none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradelab", "serve", "api", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the api did not answer /healthz within 60 s")


def run_wrk(url: str, connections: int, threads: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          url + "/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"tool": "wrk", "rps": rps, "non_2xx": int(errors.group(1)) if errors else 0}


def run_load(url: str, connections: int, workers: int, seconds: int, home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    # A port where no lab master answers, so `tradelab load` runs Locust here.
    env.update(TRADELAB_HOME=home, TRADELAB_PORTS__LOCUST=str(free_port()))
    out = subprocess.run(
        [sys.executable, "-m", "tradelab", "load", "--host", url, "--user-type", "index",
         "--users", str(connections), "--spawn-rate", str(connections),
         "--duration", f"{seconds}s", "--workers", str(workers), "--fail-ratio", "1",
         "--json"], env=env, capture_output=True, text=True, check=True).stdout
    summary = json.loads(out)
    return {"tool": "tradelab load", "rps": summary["rps"], "requests": summary["requests"],
            "failures": summary["failures"], "p95_ms": summary["p95_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--load-workers", type=int, default=2,
                        help="Locust worker processes, and wrk threads")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--api-threads", type=int, default=4)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="tradelab-bench-load-")
    api, url = start_api(args.api_workers, args.api_threads, home)
    results: dict[str, list[float]] = {"wrk": [], "tradelab load": []}
    try:
        run_wrk(url, args.connections, args.load_workers, 3)  # warm-up
        for n in range(args.rounds):
            order = ("wrk", "load") if n % 2 == 0 else ("load", "wrk")
            for tool in order:
                if tool == "wrk":
                    row = run_wrk(url, args.connections, args.load_workers, args.seconds)
                else:
                    row = run_load(url, args.connections, args.load_workers, args.seconds, home)
                results[row["tool"]].append(row["rps"])
                print(json.dumps({"round": n + 1, **row}), flush=True)
    finally:
        api.terminate()
        api.wait(timeout=15)

    wrk, load = (statistics.median(results[k]) for k in ("wrk", "tradelab load"))
    print(json.dumps({"cores": os.cpu_count(), "connections": args.connections,
                      "load_workers": args.load_workers, "wrk_rps": round(wrk, 1),
                      "tradelab_load_rps": round(load, 1),
                      "ratio_load_to_wrk": round(load / wrk, 3)}))


if __name__ == "__main__":
    main()
