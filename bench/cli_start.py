"""Figure 6: wall time of `tradelab --help` and `tradelab status`, against `import typer`.

    python -m bench --only cli

Each round runs, in rotated order, `python -c 'import typer'` (the floor of any typer
CLI), `tradelab --help`, `tradelab --version` and `tradelab status` (the console
script, in an empty temp lab with `runtime: local`, so that it answers without a
Docker engine: every service "not created"). Medians over the rounds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from bench.harness import BenchError, Figure, Run, clean_env, interleaved, median

BASELINE = "python -c 'import typer'"

LIMITS = """\
`--help` imports typer (and its bundled click), the command modules (typer only; no
docker, flask, psycopg, locust or pydantic) and prints click's plain help; until this
suite, typer's rich help also imported rich and markdown-it and built panels, which was
most of the 3.1-3.6x. `status` also loads the settings (pydantic, yaml), asks the
runtime about every service and reads the chaos state."""


def wall_ms(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
    return elapsed


def run_figure(run: Run) -> Figure:
    fig = Figure("cli", "CLI start: `tradelab --help` and `status` against `import typer`",
                 goal="`--help` 2x `import typer` or less", limits=LIMITS)
    tradelab = shutil.which("tradelab")
    if tradelab is None:
        fig.failed = "the console script `tradelab` is not on PATH (pip install -e .)"
        return fig
    lab = run.root / "lab-cli"
    lab.mkdir()
    (lab / "tradelab.yaml").write_text("runtime: local\n")
    env = clean_env(TRADELAB_HOME=str(lab))
    commands = {BASELINE: [sys.executable, "-c", "import typer"],
                "tradelab --help": [tradelab, "--help"],
                "tradelab --version": [tradelab, "--version"],
                "tradelab status": [tradelab, "status"]}
    for cmd in commands.values():  # warm the page cache and .pyc files
        wall_ms(cmd, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    rounds = run.size(15, 3)
    for order in interleaved(list(commands), rounds):
        for name in order:
            times[name].append(wall_ms(commands[name], env))
    floor = median(times[BASELINE])
    for name in ("tradelab --help", "tradelab status", "tradelab --version"):
        fig.row(name, round(median(times[name]), 1), "ms", baseline=round(floor, 1),
                baseline_name="import typer",
                note=f"min {min(times[name]):.0f} ms, max {max(times[name]):.0f} ms")
    fig.row(BASELINE, round(floor, 1), "ms")
    fig.notes.append(f"medians of {rounds} interleaved rounds; the issue measured --help at "
                     "483 ms, 3.1x `import typer`, before this suite's fix (plain click help).")
    return fig
