"""Drills: a hidden incident, a scripted responder, the scorecard and the postmortem.

Without a lab: the seeded plan, the hiding in chaos state and metrics, readable errors.
On a LOCAL lab (one for the module, rule windows scaled by 0.02 and 1s scrapes as in
test_gameday, so a db-outage pages within seconds): a responder that acks, diagnoses
right and mitigates passes; a level-2 drill diagnosed wrong, with every alert silenced,
is scored wrong with one harmful action and exits 3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from tradelab.chaos_state import ChaosCollector, ChaosReader, ChaosStore, reported_faults
from tradelab.drill.plan import drill_faults, plan_drill
from tradelab.errors import TradelabError
from tradelab.faults import FAULTS

PORT_KEYS = ("api", "engine", "postgres", "prometheus", "alertmanager", "locust",
             "locust_master")
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("alertmanager") is None
    and shutil.which("prometheus-alertmanager") is None,
    reason="prometheus / alertmanager binaries not on PATH (Debian packages)")


def _cli(lab: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env["TRADELAB_HOME"] = str(lab)
    return subprocess.run([sys.executable, "-m", "tradelab", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


# -- without a lab -------------------------------------------------------------------

def test_the_same_seed_gives_the_same_drill():
    assert plan_drill(7, 2) == plan_drill(7, 2)
    delays = {plan_drill(seed, 1)["inject_after_s"] for seed in range(10)}
    assert len(delays) > 1  # the seed matters
    assert plan_drill(7, 1)["red_herring"] is None
    assert plan_drill(7, 2)["red_herring"]["alertname"]


def test_each_level_plans():
    assert len(plan_drill(3, 1)["faults"]) == 1
    assert plan_drill(3, 2)["red_herring"] is not None
    # Level 3: two faults at once, or one wedged-process fault that outlives its trigger.
    kinds = set()
    for seed in range(12):
        faults = plan_drill(seed, 3, venues=["alpha", "beta"], window=(5, 9))["faults"]
        if len(faults) == 2:
            assert faults[0]["fault"] != faults[1]["fault"]
            kinds.add("two faults")
        else:
            (fault,) = faults
            assert fault["persists"] and 5 <= fault["trigger_s"] <= 9
            assert FAULTS[fault["fault"]].cleared_by_restart
            kinds.add("persisting")
    assert kinds == {"two faults", "persisting"}
    if len(drill_faults(None)) < 2:
        with pytest.raises(TradelabError, match="level 3"):
            plan_drill(1, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"level": 4}, "invalid level 4"),
    ({"scenario": "disk-full"}, "unknown fault 'disk-full'"),
    ({"window": (60.0, 10.0)}, "invalid window"),
])
def test_a_bad_plan_is_refused(kwargs, message):
    with pytest.raises(TradelabError, match=message):
        plan_drill(1, **kwargs)


def test_drill_commands_without_a_drill_say_so_in_one_line(tmp_path):
    for args in (("status",), ("ack",), ("diagnose", "db-outage"), ("end",), ("scorecard",)):
        result = _cli(tmp_path, "drill", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
        assert "drill" in result.stderr
    history = _cli(tmp_path, "drill", "history", "--json")
    assert history.returncode == 0 and json.loads(history.stdout) == {"drills": []}


def test_a_hidden_fault_is_reported_as_a_drill_only(tmp_path):
    store = ChaosStore(tmp_path / "chaos.json")
    store.enable("engine-stall", hidden=True)
    shown = json.dumps(reported_faults(store.active()))
    assert "engine-stall" not in shown and '"drill"' in shown
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(ChaosCollector(ChaosReader(tmp_path / "chaos.json", check_interval_s=0)))
    text = generate_latest(registry).decode()
    assert "tradelab_drill_active 1.0" in text
    assert "engine-stall" not in text and "tradelab_chaos_active" not in text
    store.disable()
    text = generate_latest(registry).decode()
    assert "tradelab_drill_active 0.0" in text and 'fault="engine-stall"' in text


# -- on a running local lab ----------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tradelab.lab import Lab
    from tradelab.orchestrator import down, up
    from tradelab.settings import load_settings

    root = tmp_path_factory.mktemp("drill") / "lab"
    root.mkdir()
    (root / "tradelab.yaml").write_text(yaml.safe_dump({
        "ports": {key: free_port() for key in PORT_KEYS}, "runtime": "local",
        "slo": {"window_scale": 0.02},
        "prometheus": {"scrape_interval_s": 1, "evaluation_interval_s": 1},
        "engine": {"baseline_failure_rate": 0.0},
    }))
    settings = load_settings(Lab(root), env={})
    try:
        up(settings, Lab(root), "local", timeout=180)
        yield root
    finally:
        _cli(root, "drill", "end")
        down(settings, Lab(root), "local", volumes=True)


def _wait(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _status(lab: Path) -> dict:
    result = _cli(lab, "drill", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _events(lab: Path) -> list[dict]:
    from tradelab.drill.session import last_session
    from tradelab.lab import Lab

    return last_session(Lab(lab)).events()


def _metrics(lab: Path, port_key: str) -> str:
    ports = yaml.safe_load((lab / "tradelab.yaml").read_text())["ports"]
    with urllib.request.urlopen(f"http://127.0.0.1:{ports[port_key]}/metrics", timeout=5) as r:
        return r.read().decode()


@pytest.mark.slow
@needs_prometheus
def test_a_scripted_responder_acks_diagnoses_mitigates_and_passes(lab):
    started = _cli(lab, "drill", "start", "--seed", "11", "--scenario", "db-outage",
                   "--window", "3s-5s", "--sustain", "8s", "--json")
    assert started.returncode == 0, started.stderr
    drill = json.loads(started.stdout)["drill"]
    assert "db-outage" not in started.stdout
    _wait(lambda: any(e["event"] == "injected" for e in _events(lab)), "the injection")
    # While hidden, nothing names the fault.
    for args in (("chaos", "status", "--json"), ("status", "--json"),
                 ("drill", "status", "--json")):
        out = _cli(lab, *args)
        assert out.returncode == 0 and "db-outage" not in out.stdout, (args, out.stdout)
    assert '"drill"' in _cli(lab, "chaos", "status", "--json").stdout
    engine = _metrics(lab, "engine")
    assert "tradelab_drill_active 1.0" in engine and "db-outage" not in engine
    # Paged, the responder acks, diagnoses and pulls a lever: starting the lab's services.
    _wait(lambda: any(a["severity"] == "page" for a in _status(lab)["firing_alerts"] or []),
          "a page")
    assert _cli(lab, "drill", "ack").returncode == 0
    assert _cli(lab, "drill", "diagnose", "db-outage").returncode == 0
    mitigate = _cli(lab, "up", timeout=240)
    assert mitigate.returncode == 0, mitigate.stderr
    _wait(lambda: _status(lab)["state"] == "completed", "the drill to complete", 240)
    end = _cli(lab, "drill", "end", "--json")
    assert end.returncode == 0, end.stderr + end.stdout
    card = json.loads(end.stdout)
    assert card["drill"] == drill and card["passed"] and card["outcome"] == "completed"
    assert card["diagnosis"] == {"correct": True, "tries": 1, "answers": ["db-outage"]}
    assert card["trades_lost"] == 0 and card["harmful_actions"]["count"] == 0
    times = card["times"]
    assert times["ack_from_page_s"] >= 0 and times["mitigate_from_injection_s"] > 0
    postmortem = Path(card["files"]["postmortem"]).read_text()
    for heading in ("## Summary", "## Impact", "## Timeline", "## Root cause",
                    "## Detection", "## Mitigation", "## What went well", "## What to change"):
        assert heading in postmortem
    assert "db-outage" in postmortem and "firing" in postmortem
    assert "tradelab_chaos_active" in _metrics(lab, "engine")  # shown again after the drill


@pytest.mark.slow
@needs_prometheus
def test_a_wrong_diagnosis_and_a_silence_of_everything_are_scored(lab):
    started = _cli(lab, "drill", "start", "--seed", "5", "--level", "2", "--scenario",
                   "db-outage", "--window", "2s-3s", "--no-load", "--json")
    assert started.returncode == 0, started.stderr
    _wait(lambda: {"injected", "red_herring"} <= {e["event"] for e in _events(lab)},
          "the injection and the red herring")
    from tradelab.alerts import alertmanager_url
    from tradelab.lab import Lab
    from tradelab.settings import load_settings

    am = alertmanager_url(load_settings(Lab(lab), env={}))
    herring = next(e for e in _events(lab) if e["event"] == "red_herring")["alertname"]
    _wait(lambda: herring in _cli(lab, "alerts", "--json").stdout, "the red herring alert")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    body = json.dumps({"matchers": [{"name": "alertname", "value": ".+", "isRegex": True}],
                       "startsAt": now, "endsAt": later, "createdBy": "test",
                       "comment": "shush"}).encode()
    request = urllib.request.Request(f"{am}/api/v2/silences", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        silence = json.load(response)["silenceID"]
    assert _cli(lab, "drill", "diagnose", "engine-stall").returncode == 0
    end = _cli(lab, "drill", "end", "--json")
    # Scored: lift the silence, or the later drills of this module hear no page.
    urllib.request.urlopen(urllib.request.Request(f"{am}/api/v2/silence/{silence}",
                                                  method="DELETE"), timeout=5).close()
    assert end.returncode == 3, end.stderr  # did not pass
    card = json.loads(end.stdout)
    assert card["outcome"] == "ended" and not card["passed"]
    assert card["diagnosis"]["correct"] is False and card["diagnosis"]["tries"] == 1
    assert card["harmful_actions"]["count"] == 1
    assert "chaos: no fault is on" in _cli(lab, "chaos", "status").stdout  # restored
    history = json.loads(_cli(lab, "drill", "history", "--json").stdout)["drills"]
    assert [d["passed"] for d in history] == [True, False]


@pytest.mark.slow
@needs_prometheus
def test_a_persisting_fault_stays_until_the_lever_and_a_level_3_responder_passes(lab):
    # Seed 5: api-errors persisting (its trigger ends 2.8 s after the injection) and a
    # burst of warning logs as the red herring.
    started = _cli(lab, "drill", "start", "--seed", "5", "--level", "3", "--scenario",
                   "api-errors", "--window", "2s-3s", "--sustain", "5s", "--json")
    assert started.returncode == 0, started.stderr
    plan = json.loads(_cli(lab, "drill", "status", "--json").stdout)
    assert plan["level"] == 3 and "api-errors" not in started.stdout + json.dumps(plan)
    _wait(lambda: "trigger_ended" in {e["event"] for e in _events(lab)}, "the trigger's end")
    # The trigger is gone; the api's processes it hit still fail orders, and the watcher
    # does not see the effect gone.
    def failed_posts() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in _metrics(lab, "api").splitlines()
                   if line.startswith("tradelab_http_requests_total{")
                   and 'code="500"' in line and 'route="/trades"' in line)
    before = failed_posts()
    _wait(lambda: failed_posts() > before + 3, "orders failing after the trigger ended", 30)
    assert "effect_gone" not in {e["event"] for e in _events(lab)}
    _wait(lambda: any(a["severity"] == "page" for a in _status(lab)["firing_alerts"] or []),
          "a page")
    assert _cli(lab, "drill", "ack").returncode == 0
    assert _cli(lab, "drill", "diagnose", "api-errors").returncode == 0
    herring = next(e for e in _events(lab) if e["event"] == "red_herring")
    assert herring["herring"] == "warning-logs" and herring["refused_orders"] > 0
    logs = _cli(lab, "logs", "api", "--tail", "400").stdout.splitlines()
    rejected = [json.loads(line[line.index("{"):]) for line in logs if "order rejected" in line]
    assert rejected and {r["level"] for r in rejected} == {"warning"}, logs[-5:]
    assert not [line for line in logs if "api-errors" in line]  # the logs do not tell
    from tradelab.drill.session import now_iso

    lever_pulled_at = now_iso()
    restarted = _cli(lab, "ops", "restart", "api", timeout=180)
    assert restarted.returncode == 0, restarted.stderr
    _wait(lambda: _status(lab)["state"] == "completed", "the drill to complete", 240)
    card = json.loads(_cli(lab, "drill", "end", "--json").stdout)
    assert card["passed"], card
    assert card["level"] == 3 and card["faults"] == ["api-errors"]
    events = _events(lab)
    kinds = [e["event"] for e in events]
    assert kinds.index("trigger_ended") < kinds.index("effect_gone")
    # Seen gone only once the lever was pulled: not when the trigger ended.
    assert next(e for e in events if e["event"] == "effect_gone")["time"] > lever_pulled_at
    postmortem = Path(card["files"]["postmortem"]).read_text()
    assert "persisting" in postmortem and "trigger ended (api-errors)" in postmortem
    assert postmortem.count("red herring: a burst of warning logs") == 1
