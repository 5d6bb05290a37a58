"""The benchmark suite still runs: `python -m bench --quick` produces every figure.

No wall-clock assertion: the figures are reported, never judged here. The quick run
uses tiny sizes against the real components (PostgreSQL, gunicorn, wrk, Locust, the
local runtime), about a minute on the 2-core CI machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("api", "engine", "load", "metrics", "operator", "cli", "lab", "gameday")

pytestmark = pytest.mark.slow


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_quick_run_writes_every_figure(tmp_path):
    out = tmp_path / "benchmarks.md"
    result = bench("--quick", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    figures = {f["name"]: f for f in report["figures"]}
    assert list(figures) == list(FIGURES)
    for name, fig in figures.items():
        assert fig["failed"] is None, (name, fig["failed"], result.stderr[-3000:])
        assert fig["rows"], (name, fig)
        assert all(isinstance(r["value"], int | float) for r in fig["rows"]), fig
    assert any(r["ratio"] for r in figures["api"]["rows"])
    assert any(r["ratio"] for r in figures["cli"]["rows"])
    text = out.read_text()
    for n, fig in enumerate(report["figures"], 1):
        assert f"## {n}. {fig['title']}" in text
    assert "What limits it:" in text and report["machine"]["cpu"] in text


def test_a_hand_written_tail_survives_and_unknown_figures_are_refused(tmp_path):
    out = tmp_path / "benchmarks.md"
    assert bench("--quick", "--only", "gameday", "--out", str(out)).returncode == 0
    first = out.read_text()
    assert "## 1. Game day" in first
    out.write_text(first.rstrip("\n").replace("(measured in", "(OLD measured in")
                   + "\n## Where the time goes\nprofile\n")
    result = bench("--quick", "--only", "gameday", "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "OLD measured" not in text  # the generated part is rewritten...
    assert text.endswith("-->\n## Where the time goes\nprofile\n")  # ...the tail kept

    refused = bench("--only", "api,nope")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("error: unknown figure nope")
