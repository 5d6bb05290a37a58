"""Figure 3: requests/s `tradelab load` generates against a cheap endpoint, against wrk.

    python -m bench --only load

Starts the real API (`python -m tradelab serve api`, no database: GET / never uses
it) and drives GET / alternately with wrk (`-t 2 -c 64`) and with `tradelab load
--user-type index` (Locust FastHttpUser, no think time, 2 worker processes, one user
per wrk connection), in interleaved rounds on the same machine. Both load generators
share the cores with the API, as they would on a laptop. The ratio load/wrk is the
share of wrk's throughput that Locust reaches on the same cores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from bench.harness import Figure, Run, clean_env, free_port, interleaved, median, wait_http

CONNECTIONS, LOAD_WORKERS = 64, 2

LIMITS = """\
wrk is C with an event loop per thread; Locust runs Python greenlets (gevent) in each
worker process, and every request goes through FastHttpUser's client, Locust's event
hooks and its statistics, then the worker reports to the master each second. On 2
cores shared with the API that costs most of a core per worker; `tradelab load` also
starts a master and its workers (a few seconds, outside the measured rate: the rate is
Locust's own requests / run time). See docs/load.md."""


def run_wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t", str(LOAD_WORKERS), "-c", str(CONNECTIONS), "-d",
                          f"{seconds}s", url + "/"], capture_output=True, text=True,
                         check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def run_load(url: str, seconds: int, workers: int, home: str) -> dict:
    # A port where no lab master answers, so `tradelab load` runs Locust here.
    env = clean_env(TRADELAB_HOME=home, TRADELAB_PORTS__LOCUST=str(free_port()),
                    TRADELAB_PORTS__LOCUST_MASTER=str(free_port()))
    out = subprocess.run(
        [sys.executable, "-m", "tradelab", "load", "--host", url, "--user-type", "index",
         "--users", str(CONNECTIONS), "--spawn-rate", str(CONNECTIONS), "--duration",
         f"{seconds}s", "--workers", str(workers), "--fail-ratio", "1", "--json"],
        env=env, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"tradelab load failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def run_figure(run: Run) -> Figure:
    fig = Figure("load", "Load generator: `tradelab load` against wrk",
                 goal="0.5x wrk or better", limits=LIMITS)
    if not shutil.which("wrk"):
        fig.skipped = "wrk not found (apt-get install wrk)"
        return fig
    home = str(run.root / "lab-load")
    port = free_port()
    # GET / never touches the database; a closed port keeps the benchmark self-contained.
    api = run.spawn([sys.executable, "-m", "tradelab", "serve", "api", "--bind",
                     f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"], "api-load",
                    env=clean_env(TRADELAB_HOME=home, TRADELAB_DATABASE_URL=
                                  f"postgresql://bench:x@127.0.0.1:{free_port()}/none"))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", api)
    seconds, rounds = run.size(10, 1), run.size(3, 1)
    run_wrk(url, run.size(3, 1))  # warm-up
    rates: dict[str, list[float]] = {"wrk": [], "tradelab load": []}
    for r, order in enumerate(interleaved(list(rates), rounds)):
        for tool in order:
            if tool == "wrk":
                rates[tool].append(run_wrk(url, seconds))
            else:
                # --quick: Locust in one process (a master and workers take ~25 s to
                # start, settle their last reports and stop).
                summary = run_load(url, seconds, run.size(LOAD_WORKERS, 0), home)
                rates[tool].append(summary["rps"])
            run.log(f"  load round {r}: {tool} {rates[tool][-1]:.0f} req/s")
    wrk, load = median(rates["wrk"]), median(rates["tradelab load"])
    fig.row("tradelab load, GET /", round(load, 1), "requests/s", baseline=round(wrk, 1),
            baseline_name="wrk")
    fig.row("wrk, GET /", round(wrk, 1), "requests/s")
    fig.notes.append(f"{CONNECTIONS} connections/users, {LOAD_WORKERS} wrk threads, "
                     f"{run.size(LOAD_WORKERS, 0)} Locust worker processes (0: Locust in one "
                     f"process), {rounds} interleaved rounds of {seconds} s; per round load/wrk: "
                     + ", ".join(f"{a / b:.2f}" for a, b in zip(rates["tradelab load"],
                                                               rates["wrk"], strict=True)))
    return fig
