"""The code's shape, checked: the layer graph (import-linter), the types (mypy), a light CLI.

The layers are declared once, in pyproject.toml ([tool.importlinter]); the test that
plants an upward import in a copy of the package shows the contract can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("docker", "flask", "psycopg", "locust", "pydantic", "gunicorn")


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: grimp then reads the package under `src`, not the installed one.
    return subprocess.run([tool("lint-imports"), "--config", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
                          capture_output=True, text=True, timeout=300)


def test_imports_run_one_way_only():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("stack.py", "from tradelab.orchestrator import up"),      # the model reaching for core
    ("runtimes/local.py", "from tradelab.render import render_stack"),  # a driver rendering
    ("faults.py", "import tradelab.cli.main"),                 # anything importing the CLI
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward):
    copy = tmp_path / "src" / "tradelab"
    shutil.copytree(ROOT / "src" / "tradelab", copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {upward}\n")
    result = lint_imports(tmp_path / "src")
    assert result.returncode != 0, result.stdout[-2000:]
    assert "BROKEN" in result.stdout


def test_mypy_passes_on_src():
    result = subprocess.run([tool("mypy"), "--no-incremental"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_help_imports_no_heavy_package():
    probe = (
        "import sys\n"
        "sys.argv = ['tradelab', '--help']\n"
        "import tradelab.cli.main as cli\n"
        "try:\n    cli.run()\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_skip_for_want_of_locust_or_root_fails_in_ci(tmp_path):
    """As a skip for want of Docker does: a green CI run means those tests really ran."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_needs_locust():\n    pytest.skip('locust not on PATH')\n\n"
        "def test_needs_root():\n    pytest.skip('only root runs the server as another user')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    outcomes = {}
    for required in ("0", "1"):
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=tmp_path, env={**env, "TRADELAB_REQUIRE_REAL": required},
            capture_output=True, text=True, timeout=120)
        outcomes[required] = result.stdout.strip().splitlines()[-1]
    assert "2 skipped" in outcomes["0"], outcomes
    assert "2 failed" in outcomes["1"], outcomes
