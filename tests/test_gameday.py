"""Game days end to end on the LOCAL runtime: real supervisord, PostgreSQL, gunicorn,
engine, Prometheus, Alertmanager and Locust; chaostoolkit-lib runs the experiments.

One lab for the module, with rule windows scaled by 0.02 (slo.window_scale: the 5m
window is 6s, 1h is 72s) and 1s scrapes, so each bundled scenario pages and recovers in
well under a minute. Every bundled scenario runs, in file order, through
`python -m tradelab gameday run`; then a user's own experiment whose alert never fires
(exit 1), `tradelab gameday report DIR`, and a bundled file run by plain `chaos run`.

    pytest tests/test_gameday.py -s     # -s prints the measured table
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from tradelab.errors import TradelabError
from tradelab.gameday.scenarios import bundled, list_scenarios, load_scenario

SCHEMA = Path(__file__).parents[1] / "src" / "tradelab" / "gameday" / "journal.schema.json"
PORT_KEYS = ("api", "engine", "postgres", "prometheus", "alertmanager", "locust",
             "locust_master")
FAST = ["--warmup", "8s", "--fault-for", "10s", "--detect-timeout", "45s",
        "--recover-timeout", "90s", "--users", "8"]
MEASURED: dict[str, dict] = {}

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("alertmanager") is None
    and shutil.which("prometheus-alertmanager") is None,
    reason="prometheus / alertmanager binaries not on PATH (Debian packages)")


# -- without a lab -------------------------------------------------------------------

def test_one_bundled_scenario_per_catalogued_fault_each_naming_a_real_alert(tmp_path):
    from tradelab.faults import FAULTS
    from tradelab.lab import Lab
    from tradelab.render import render
    from tradelab.settings import load_settings

    rows = list_scenarios()
    assert sorted(r["scenario"] for r in rows) == sorted(FAULTS)
    assert all(r["fault"] == r["scenario"] for r in rows)
    render(load_settings(None, env={}), Lab(tmp_path / "lab"), tmp_path / "out", runtime="local")
    rules = [rule for f in (tmp_path / "out" / "prometheus" / "rules").glob("*.yml")
             for g in yaml.safe_load(f.read_text())["groups"] for rule in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    for row in rows:
        assert row["expected_alert"] in alerts, row


def test_gameday_list_json(tmp_path):
    result = _cli(tmp_path, "gameday", "list", "--json")
    assert result.returncode == 0, result.stderr
    names = [s["scenario"] for s in json.loads(result.stdout)["scenarios"]]
    assert names == sorted(bundled())


@pytest.mark.parametrize("change, message", [
    (lambda e: e["configuration"].pop("expected_alert"), "needs 'expected_alert'"),
    (lambda e: e["configuration"].update(fault="disk-full"), "unknown fault 'disk-full'"),
    (lambda e: e["method"][0]["provider"].update(func="no_such_action"), "not a valid Chaos"),
])
def test_a_broken_experiment_file_is_refused_in_one_line(tmp_path, change, message):
    experiment = json.loads(bundled()["db-outage"].read_text())
    change(experiment)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(experiment))
    with pytest.raises(TradelabError, match=message):
        load_scenario(str(path))
    result = _cli(tmp_path, "gameday", "run", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message.split("'")[0] in result.stderr


def test_an_unknown_scenario_names_the_bundled_ones(tmp_path):
    result = _cli(tmp_path, "gameday", "run", "db-outge")
    assert result.returncode == 1 and "db-outage" in result.stderr, result.stderr


def test_report_of_a_directory_without_a_journal(tmp_path):
    result = _cli(tmp_path, "gameday", "report", str(tmp_path))
    assert result.returncode == 1 and "no journal.json" in result.stderr


# -- on a running local lab ----------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tradelab.lab import Lab
    from tradelab.orchestrator import down, up
    from tradelab.settings import load_settings

    root = tmp_path_factory.mktemp("gameday") / "lab"
    root.mkdir()
    (root / "tradelab.yaml").write_text(yaml.safe_dump({
        "ports": {key: free_port() for key in PORT_KEYS}, "runtime": "local",
        "slo": {"window_scale": 0.02},
        "prometheus": {"scrape_interval_s": 1, "evaluation_interval_s": 1},
        # No baseline failures: with 6s windows, 3 unlucky ones would page (docs/slo.md).
        "engine": {"baseline_failure_rate": 0.0},
    }))
    settings = load_settings(Lab(root), env={})
    try:
        up(settings, Lab(root), "local", timeout=180)
        yield root
    finally:
        down(settings, Lab(root), "local", volumes=True)
        if MEASURED:
            print("\n| scenario | alert | detect | recover | reconciliation |")
            for name, r in MEASURED.items():
                print(f"| {name} | {r['expected_alert']} ({'seen' if r['seen'] else 'NOT seen'})"
                      f" | {r['time_to_detect_s']} | {r['time_to_recover_s']} | "
                      f"{r['reconciliation']['summary']} |")


def _on_local() -> list[str]:
    """The bundled scenarios whose fault the local runtime can carry out; the others
    (network-cut) are refused in one line there (test_a_fault_the_local_runtime_cannot_
    make_is_refused_in_one_line) and run on Docker (tests/test_docker.py)."""
    from tradelab.faults import FAULTS

    return [s for s in sorted(bundled()) if "local" in FAULTS[s].runtimes]


@pytest.mark.slow
@pytest.mark.spread
@needs_prometheus
@pytest.mark.parametrize("scenario", _on_local())
def test_bundled_scenario_on_the_local_runtime(lab, scenario):
    result = _cli(lab, "gameday", "run", scenario, *FAST, "--json", timeout=400)
    out = json.loads(result.stdout)
    MEASURED[scenario] = {**out, "seen": any(a["alertname"] == out["expected_alert"]
                                             for a in out["alerts_seen"])}
    journal = _valid_journal(Path(out["directory"]))
    assert journal["reconciliation"]["ok"], journal["reconciliation"]
    assert journal["reconciliation"]["counts"]["ok"] > 0
    assert journal["steady_state_before"]["met"] is True
    _assert_report(Path(out["directory"]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert out["ok"] and out["time_to_detect_s"] > 0 and out["time_to_recover_s"] > 0
    assert MEASURED[scenario]["seen"]
    assert journal["steady_state_after"]["met"] is True
    # Progress on the terminal: the step, the elapsed time, what it waits for.
    assert "Action: wait-for-alert" in result.stderr and "[00:" in result.stderr


@needs_prometheus
def test_a_fault_the_local_runtime_cannot_make_is_refused_in_one_line(lab):
    refusal = ("error: the local runtime cannot carry out network-cut: only the docker runtime "
               "can (`tradelab up --runtime docker`)")
    for args in (("chaos", "on", "network-cut"), ("gameday", "run", "network-cut")):
        result = _cli(lab, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines() == [refusal]
    status = json.loads(_cli(lab, "chaos", "status", "--json").stdout)
    assert "network-cut" not in json.dumps(status)  # nothing recorded
    from tradelab.lab import Lab
    from tradelab.orchestrator import running_driver
    from tradelab.settings import load_settings

    driver = running_driver(load_settings(Lab(lab), env={}), Lab(lab))
    with pytest.raises(TradelabError, match="^the local runtime cannot cut the network of "
                                            "engine: only the docker runtime can"):
        driver.disconnect("engine")  # the primitive itself, asked directly


@pytest.mark.slow
@needs_prometheus
def test_an_alert_that_never_fires_makes_run_exit_1(lab, tmp_path):
    experiment = json.loads(bundled()["exchange-latency"].read_text())
    experiment["configuration"]["expected_alert"] = "DatabaseDown"  # not what latency trips
    path = tmp_path / "wrong-alert.yaml"  # a user's own file, in YAML
    path.write_text(yaml.safe_dump(experiment))
    result = _cli(lab, "gameday", "run", str(path), "--warmup", "5s", "--fault-for", "5s",
                  "--detect-timeout", "8s", "--recover-timeout", "60s", "--json", timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["time_to_detect_s"] is None
    assert any("DatabaseDown was not seen" in f for f in out["failures"])
    assert out["scenario"] == "wrong-alert"
    _valid_journal(Path(out["directory"]))


@pytest.mark.slow
@needs_prometheus
def test_gameday_report_draws_the_report_again_from_the_journal(lab):
    directory = sorted((lab / "state" / "gamedays").iterdir())[0]
    for name in ("report.html", "report.md"):
        (directory / name).unlink()
    shutil.rmtree(directory / "charts")
    result = _cli(lab, "gameday", "report", str(directory))
    assert result.returncode == 0, result.stderr
    _assert_report(directory)


@pytest.mark.slow
@needs_prometheus
@pytest.mark.skipif(shutil.which("chaos") is None and not
                    (Path(sys.executable).parent / "chaos").exists(),
                    reason="the chaostoolkit CLI is not installed (pip install chaostoolkit)")
def test_plain_chaos_run_runs_a_bundled_experiment(lab, tmp_path):
    chaos = shutil.which("chaos") or str(Path(sys.executable).parent / "chaos")
    env = _env(lab)
    env.update(TRADELAB_GAMEDAY_WARMUP_S="8", TRADELAB_GAMEDAY_FAULT_FOR_S="10",
               TRADELAB_GAMEDAY_DETECT_TIMEOUT_S="45", TRADELAB_GAMEDAY_RECOVER_TIMEOUT_S="90")
    journal_path = tmp_path / "journal.json"
    result = subprocess.run(
        [chaos, "--no-version-check", "--log-file", str(tmp_path / "chaostoolkit.log"), "run",
         "--journal-path", str(journal_path), str(bundled()["db-outage"])],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    journal = json.loads(journal_path.read_text())
    assert journal["status"] == "completed" and not journal["deviated"]
    outputs = {r["activity"]["name"]: r["output"] for r in journal["run"]}
    assert outputs["wait-for-alert"]["alert"] == "DatabaseDown"
    assert outputs["wait-for-alert"]["time_to_detect_s"] > 0
    assert outputs["wait-for-recovery"]["time_to_recover_s"] > 0
    assert journal["reconciliation"]["ok"], journal["reconciliation"]


# -- helpers -------------------------------------------------------------------------

def _env(lab_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env["TRADELAB_HOME"] = str(lab_root)
    return env


def _cli(lab_root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradelab", *args], env=_env(lab_root),
                          capture_output=True, text=True, timeout=timeout)


def _valid_journal(directory: Path) -> dict:
    import jsonschema

    journal = json.loads((directory / "journal.json").read_text())
    jsonschema.validate(journal, json.loads(SCHEMA.read_text()))
    return journal


def _assert_report(directory: Path) -> None:
    charts = sorted((directory / "charts").glob("*.png"))
    assert [c.name for c in charts] == ["backlog.png", "error_ratio.png", "latency_p99.png"]
    for chart in charts:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (directory / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3 and "<img" in html
    assert "charts/error_ratio.png" in (directory / "report.md").read_text()
