"""The one CLI runner: `tradelab` in-process through typer's runner, or as a real process.

    result = invoke("--lab-dir", str(root), "status", "--json")   # result.exit_code, .output
    proc = run("find-trade", "--id", "1", env={"TRADELAB_HOME": str(root)})
    proc = run("status", module=False)      # the installed `tradelab` console script

A subprocess gets this environment without any TRADELAB_* variable, plus `env`: a
test never inherits another lab's settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tradelab.cli.main import app

_runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    """`tradelab ARGS` in this process (typer's CliRunner)."""
    return _runner.invoke(app, list(args), env=env)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        module: bool = True) -> subprocess.CompletedProcess:
    """`python -m tradelab ARGS` (or the `tradelab` console script) in a subprocess."""
    cmd = [sys.executable, "-m", "tradelab", *args] if module else [
        shutil.which("tradelab") or pytest.fail("console script `tradelab` not on PATH"), *args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
