"""`tradelab doctor --runtime local` lists the optional binaries docs/local.md says it
checks (prometheus, alertmanager, locust): where each was found, or that it is missing,
how to install it and what the lab cannot do without it. A missing one is a note, not a
failure: the lab runs without it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from support.cli import run

OPTIONAL = ("prometheus", "alertmanager", "locust")


def doctor(lab: Path, path: str | None = None) -> dict:
    env = {"TRADELAB_HOME": str(lab)} | ({"PATH": path} if path else {})
    result = run("doctor", "--runtime", "local", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {c["check"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.fixture
def bin_dir():
    """A directory for a PATH of links; outside pytest's 0700 temp dir, as the
    `postgres` user runs commands from PATH too (doctor as root asks it)."""
    path = Path(tempfile.mkdtemp(prefix="tradelab-path-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def path_without(farm: Path, *names: str) -> str:
    """A PATH holding every command of this one but `names` (the venv of this Python
    is left out: tradelab finds its console scripts, locust, beside it anyway)."""
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory) or directory == str(Path(sys.executable).parent):
            continue
        for entry in os.scandir(directory):
            if entry.name not in names and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry.path)
    return str(farm)


def test_doctor_names_each_optional_binary_found(lab_dir):
    if not all(shutil.which(b) for b in ("prometheus", "prometheus-alertmanager")):
        pytest.skip("Debian's prometheus and prometheus-alertmanager are not installed")
    checks = doctor(lab_dir)
    for tool in OPTIONAL:
        assert checks[tool]["ok"] is True, checks[tool]
        assert checks[tool]["detail"].startswith("found: /"), checks[tool]
    assert checks["alertmanager"]["detail"].endswith("alertmanager")


def test_doctor_says_what_is_lost_without_a_missing_binary(lab_dir, bin_dir):
    checks = doctor(lab_dir, path_without(bin_dir, "prometheus", "alertmanager",
                                          "prometheus-alertmanager"))
    prometheus, alertmanager = checks["prometheus"], checks["alertmanager"]
    assert prometheus["ok"] is None and alertmanager["ok"] is None  # notes: up still works
    assert "apt-get install prometheus" in prometheus["detail"]
    assert "`tradelab watch`" in prometheus["detail"]
    assert "alertmanager or prometheus-alertmanager not found" in alertmanager["detail"]
    assert "`tradelab alerts`" in alertmanager["detail"]
    assert checks["postgresql"]["ok"] is True
