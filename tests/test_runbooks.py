"""Runbook links a user can open offline, and `tradelab runbook ALERT`.

The runbooks are docs/runbooks.md, shipped in the package (src/tradelab/docs links to
docs/): the rendered rules link to that installed copy unless alerting.runbook_base_url
names a team's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
import yaml
from typer.testing import CliRunner

from tradelab.cli.main import app

ROOT = Path(__file__).parents[1]


def _rendered_alerts(lab_dir, *args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["render", "--runtime", "local", *args])
    assert result.exit_code == 0, result.output
    rules = lab_dir / "rendered" / "local" / "prometheus" / "rules"
    return [r for path in sorted(rules.glob("*.yml"))
            for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


def test_every_runbook_link_opens_offline_at_its_section(lab_dir):
    alerts = _rendered_alerts(lab_dir)
    assert len(alerts) >= 10
    for rule in alerts:
        url = urlsplit(rule["annotations"]["runbook_url"])
        assert url.scheme == "file", rule["annotations"]["runbook_url"]
        text = Path(url2pathname(url.path)).read_text()
        assert f"\n## {rule['alert']}\n" in text and url.fragment == rule["alert"].lower()


def test_a_teams_own_runbooks_are_kept(lab_dir):
    base = "https://wiki.example.org/trading/runbooks"
    assert CliRunner().invoke(app, ["config", "set", "alerting.runbook_base_url", base]
                              ).exit_code == 0
    for rule in _rendered_alerts(lab_dir):
        assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"


def test_runbook_prints_the_section_of_an_alert(lab_dir):
    result = CliRunner().invoke(app, ["runbook", "tradeprocessingburnratehigh"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("## TradeProcessingBurnRateHigh\n")
    assert "\n## " not in result.output  # only that section
    listing = CliRunner().invoke(app, ["runbook"])
    assert listing.exit_code == 0 and "  DatabaseDown" in listing.output
    unknown = CliRunner().invoke(app, ["runbook", "NoSuchAlert"])
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: no runbook for")


@pytest.mark.slow
def test_the_wheel_ships_the_runbooks(tmp_path):
    pytest.importorskip("wheel")
    source = tmp_path / "source"  # a copy: the build leaves build/ behind in its tree
    for name in ("src", "docs", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        kwargs = {"symlinks": True, "ignore": shutil.ignore_patterns(
            "__pycache__", "*.egg-info")} if copy is shutil.copytree else {}
        copy(ROOT / name, source / name, **kwargs)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(source), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    wheel, = tmp_path.glob("tradelab-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("tradelab/docs/runbooks.md").decode()
    assert shipped == (ROOT / "docs" / "runbooks.md").read_text()


def _mitigate_paragraph(text: str, alert: str) -> str:
    section = text.split(f"\n## {alert}\n", 1)[1].split("\n## ", 1)[0]
    return " ".join(section.split("**Mitigate.**", 1)[1].split())  # one line: wraps vary


def test_each_faults_runbook_names_its_levers_and_not_chaos_off():
    """What pages for a fault says how an operator mitigates it: the catalogue's levers
    (tradelab.faults), never `chaos off`, which nobody has at work."""
    from tradelab.faults import FAULTS

    text = (ROOT / "docs" / "runbooks.md").read_text()
    for fault in FAULTS.values():
        mitigate = _mitigate_paragraph(text, fault.alert)
        for lever in fault.mitigated_by:
            assert lever in mitigate, (fault.name, fault.alert, lever)
        assert "chaos off" not in mitigate, (fault.name, fault.alert)
