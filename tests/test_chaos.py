"""Chaos state: the store, the reader services use, the metric, and `tradelab chaos`."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from support.cli import invoke
from support.polling import wait_for

from tradelab.chaos_state import (
    ChaosCollector,
    ChaosReader,
    ChaosStore,
    chaos_file_from_env,
)
from tradelab.errors import TradelabError
from tradelab.faults import FAULTS
from tradelab.lab import Lab


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "chaos.json"


# -- store -------------------------------------------------------------------------------------

def test_store_writes_a_readable_file_with_defaults_and_removes_faults(path):
    store = ChaosStore(path)
    store.enable("exchange-errors")
    store.enable("exchange-latency", latency_ms=250, duration_s=60)
    data = json.loads(path.read_text())["faults"]
    assert data["exchange-errors"]["rate"] == 0.6 and "until" not in data["exchange-errors"]
    assert data["exchange-latency"]["latency_ms"] == 250 and data["exchange-latency"]["until"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert store.disable("exchange-errors") == ["exchange-errors"]
    assert list(store.read()) == ["exchange-latency"]
    assert store.disable() == ["exchange-latency"]
    assert store.read() == {}


@pytest.mark.parametrize("call, message", [
    (lambda s: s.enable("exchange-errrors"), "unknown fault 'exchange-errrors': use one of"),
    (lambda s: s.enable("exchange-errors", rate=1.5), "invalid rate 1.5"),
    (lambda s: s.enable("exchange-errors", rate=-0.1), "invalid rate -0.1"),
    (lambda s: s.enable("exchange-errors", latency_ms=5), "takes no --latency-ms"),
    (lambda s: s.enable("engine-stall", rate=0.5), "takes no --rate"),
    (lambda s: s.disable("nope"), "unknown fault 'nope'"),
])
def test_store_refuses_bad_requests_with_one_line(path, call, message):
    with pytest.raises(TradelabError) as err:
        call(ChaosStore(path))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not path.exists() or json.loads(path.read_text())["faults"] == {}


def test_fault_with_duration_ends_by_itself(path):
    store = ChaosStore(path)
    store.enable("engine-stall", duration_s=0.5)
    reader = ChaosReader(path, flag_dir=path.parent)
    assert "engine-stall" in reader.active()
    wait_for(lambda: "engine-stall" not in reader.active(), timeout=5, what="expiry")
    assert store.read() == {}
    assert "engine-stall" in store.read(include_expired=True)  # the file itself is untouched


# -- reader ------------------------------------------------------------------------------------

def test_reader_picks_up_changes_without_restart(path):
    store = ChaosStore(path)
    reader = ChaosReader(path, flag_dir=path.parent)
    assert reader.active() == {}
    store.enable("exchange-errors", rate=0.25)
    wait_for(lambda: "exchange-errors" in reader.active(), timeout=2, what="chaos on")
    assert reader.get("exchange-errors").rate == 0.25
    store.enable("exchange-errors", rate=0.75)  # same size of file: the inode tells it apart
    wait_for(lambda: reader.get("exchange-errors").rate == 0.75, timeout=2, what="new rate")
    store.disable()
    wait_for(lambda: reader.active() == {}, timeout=2, what="chaos off")


def test_reader_keeps_last_good_state_and_warns_once_on_a_corrupt_file(path):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tradelab.chaos")
    logger.addHandler(handler)
    try:
        ChaosStore(path).enable("api-latency", latency_ms=100)
        reader = ChaosReader(path, flag_dir=path.parent, check_interval_s=0)
        assert reader.get("api-latency").latency_ms == 100
        path.write_text('{"faults": {"api-late')
        for _ in range(5):
            assert reader.get("api-latency").latency_ms == 100
        assert len([r for r in records if r.levelno == logging.WARNING]) == 1
        assert "ignoring unreadable chaos file" in records[0].getMessage()
    finally:
        logger.removeHandler(handler)


def test_reader_keeps_last_good_state_on_valid_json_of_the_wrong_shape(path):
    ChaosStore(path).enable("api-latency", latency_ms=100)
    reader = ChaosReader(path, flag_dir=path.parent, check_interval_s=0)
    assert reader.get("api-latency").latency_ms == 100
    for text in ('{"faults": []}', '[]', '{"other": 1}'):
        path.write_text(text)  # parses, but is no chaos file: must not turn the fault off
        assert reader.get("api-latency").latency_ms == 100, text


def test_chaos_flag_beside_the_chaos_file_turns_on_the_default_fault(path):
    reader = ChaosReader(path, check_interval_s=0)  # as api and engine make it
    store = ChaosStore(path)
    assert reader.active() == {} == store.active()
    path.parent.mkdir(parents=True)
    (path.parent / "chaos.flag").touch()
    fault = reader.get("exchange-errors")
    assert (fault.rate, fault.source) == (0.6, "flag")
    assert store.active()["exchange-errors"].source == "flag"  # what the CLI reports
    store.enable("exchange-errors", rate=0.1)  # the file's setting wins, in both
    assert reader.get("exchange-errors").rate == 0.1 == store.active()["exchange-errors"].rate
    store.disable()
    assert store.remove_flag() and not store.remove_flag()
    assert reader.active() == {} == store.active()


def test_missing_file_and_no_path_mean_no_faults(tmp_path):
    assert ChaosReader(tmp_path / "none.json", flag_dir=tmp_path).active() == {}
    assert ChaosReader(None, flag_dir=tmp_path).active() == {}


def test_readers_never_see_a_partial_file(path):
    store = ChaosStore(path)
    store.enable("exchange-errors")
    stop = threading.Event()
    errors: list[Exception] = []

    def write():
        i = 0
        while not stop.is_set():
            i += 1
            store.enable("exchange-latency", latency_ms=i)
            store.enable("api-errors", rate=(i % 100) / 100, duration_s=3600)
            store.disable("api-errors")

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data = json.loads(path.read_text())
                assert "exchange-errors" in data["faults"]
                reads += 1
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
    finally:
        stop.set()
        writer.join(10)
    assert reads > 10 and errors == []
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".chaos.json.")
                 and p.name != ".chaos.json.lock"]
    assert leftovers == []  # no temp files left behind


def test_collector_exports_every_fault(path):
    from prometheus_client import CollectorRegistry, generate_latest

    ChaosStore(path).enable("engine-stall")
    registry = CollectorRegistry()
    registry.register(ChaosCollector(ChaosReader(path, flag_dir=path.parent)))
    text = generate_latest(registry).decode()
    for fault in FAULTS:
        value = "1.0" if fault == "engine-stall" else "0.0"
        assert f'tradelab_chaos_active{{fault="{fault}"}} {value}' in text


def test_chaos_file_from_env(tmp_path, monkeypatch):
    lab = Lab(tmp_path)
    monkeypatch.delenv("TRADELAB_CHAOS_FILE", raising=False)
    assert chaos_file_from_env(lab) == tmp_path / "state" / "chaos.json"
    monkeypatch.setenv("TRADELAB_CHAOS_FILE", str(tmp_path / "x.json"))
    assert chaos_file_from_env(lab) == tmp_path / "x.json"


# -- CLI ---------------------------------------------------------------------------------------

def cli(lab_dir, *args):
    return invoke("--lab-dir", str(lab_dir), "chaos", *args)


def status(lab_dir) -> dict[str, dict]:
    result = cli(lab_dir, "status", "--json")
    assert result.exit_code == 0, result.output
    return {f["fault"]: f for f in json.loads(result.output)["faults"]}


def test_cli_on_status_off(lab_dir):
    result = cli(lab_dir, "on")
    assert result.exit_code == 0, result.output
    assert "exchange-errors (rate 0.6)" in result.output
    assert cli(lab_dir, "on", "exchange-latency", "--latency-ms", "1500", "--for", "5m"
               ).exit_code == 0
    faults = status(lab_dir)
    assert faults["exchange-errors"]["rate"] == 0.6
    assert faults["exchange-latency"]["latency_ms"] == 1500
    assert 290 < faults["exchange-latency"]["remaining_s"] <= 300
    table = cli(lab_dir, "status").output
    assert "exchange-latency" in table and "latency 1500 ms" in table and "until off" in table
    # what the services read is what the CLI wrote
    reader = ChaosReader(lab_dir / "state" / "chaos.json", flag_dir=lab_dir)
    assert set(reader.active()) == {"exchange-errors", "exchange-latency"}

    assert cli(lab_dir, "off", "exchange-errors").output.strip() == "chaos off: exchange-errors"
    assert set(status(lab_dir)) == {"exchange-latency"}
    assert cli(lab_dir, "off").exit_code == 0
    assert status(lab_dir) == {}
    assert cli(lab_dir, "status").output.strip() == "chaos: no fault is on"
    assert cli(lab_dir, "off").output.strip() == "chaos: nothing was on"


def test_cli_shows_the_chaos_flag_everywhere_and_chaos_off_removes_it(lab_dir):
    """The original project's switch is no secret: the lab's state/chaos.flag shows in
    `chaos status` and `tradelab status` (text and JSON), and `chaos off` ends it."""
    flag = lab_dir / "state" / "chaos.flag"
    flag.parent.mkdir(parents=True)
    (lab_dir / "tradelab.yaml").write_text("runtime: local\n")  # no Docker lab to look for
    flag.touch()
    assert status(lab_dir)["exchange-errors"]["source"] == "flag"
    assert "chaos.flag" in cli(lab_dir, "status").output
    lab = invoke("--lab-dir", str(lab_dir), "status", "--json")
    assert lab.exit_code == 0, lab.output
    assert json.loads(lab.output)["chaos"]["exchange-errors"]["source"] == "flag"
    table = invoke("--lab-dir", str(lab_dir), "status").output
    assert "chaos: exchange-errors (set by chaos.flag)" in table
    assert str(flag) in cli(lab_dir, "list").output
    assert json.loads(cli(lab_dir, "list", "--json").output)["flag_file"]["path"] == str(flag)

    off = cli(lab_dir, "off")
    assert off.exit_code == 0, off.output
    assert off.output.splitlines() == [
        f"removed {flag} (it turned exchange-errors on)", "chaos off: exchange-errors"]
    assert not flag.exists()
    assert status(lab_dir) == {}
    assert ChaosReader(lab_dir / "state" / "chaos.json").active() == {}
    flag.touch()  # `chaos off FAULT` ends it too, and only for the flag's fault
    assert "chaos: engine-stall was not on" in cli(lab_dir, "off", "engine-stall").output
    assert flag.exists()
    assert cli(lab_dir, "off", "exchange-errors").output.endswith(
        "chaos off: exchange-errors\n")
    assert not flag.exists()


def test_cli_for_ends_the_fault(lab_dir):
    assert cli(lab_dir, "on", "api-errors", "--rate", "0.3", "--for", "1s").exit_code == 0
    assert "api-errors" in status(lab_dir)
    wait_for(lambda: status(lab_dir) == {}, timeout=5, what="--for expiry")


def test_cli_scheduled_off_only_ends_the_fault_it_was_scheduled_for(lab_dir):
    assert cli(lab_dir, "on", "engine-stall").exit_code == 0
    since = status(lab_dir)["engine-stall"]["since"]
    result = cli(lab_dir, "off", "engine-stall", "--after", "0.1", "--if-since", "earlier")
    assert result.exit_code == 0 and "engine-stall" in status(lab_dir)
    result = cli(lab_dir, "off", "engine-stall", "--after", "0.1", "--if-since", since)
    assert result.exit_code == 0, result.output
    assert status(lab_dir) == {}


def test_cli_list(lab_dir):
    result = cli(lab_dir, "list")
    assert result.exit_code == 0, result.output
    for fault in FAULTS:
        assert fault in result.output
    listed = json.loads(cli(lab_dir, "list", "--json").output)["faults"]
    assert {f["fault"]: f["options"] for f in listed}["exchange-latency"] == "--latency-ms --venue"
    for f in listed:
        assert f["breaks"] and f["signal"] and f["alert"] and f["runtimes"], f
        assert f["runbook"] == f"docs/runbooks.md#{f['alert'].lower()}"
        assert f["mitigated_by"] and all(m.startswith("ops ") for m in f["mitigated_by"]), f


DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_chaos_md_holds_the_catalogue():
    """docs/chaos.md shows the catalogue as `python -m tradelab.faults` prints it."""
    from tradelab.faults import catalogue_markdown

    assert catalogue_markdown() in (DOCS / "chaos.md").read_text(), \
        "docs/chaos.md is behind the catalogue: paste `python -m tradelab.faults` into it"


def test_every_fault_has_an_alert_rule_and_a_runbook_section():
    rules = "".join(p.read_text() for p in
                    (DOCS.parent / "src/tradelab/templates/prometheus/rules").glob("*.yml"))
    runbooks = (DOCS / "runbooks.md").read_text()
    for fault in FAULTS.values():
        alert = fault.alert.replace("BurnRateHigh", "")
        assert alert in rules, f"{fault.name}: no rule for {fault.alert}"
        assert f"\n## {fault.alert}\n" in runbooks, f"{fault.name}: no runbook {fault.alert}"


@pytest.mark.parametrize("args, message", [
    (["on", "exchange-erors"], "unknown fault 'exchange-erors': use one of exchange-errors,"),
    (["on", "--rate", "1.5"], "invalid rate 1.5: use a share between 0 and 1"),
    (["on", "--for", "soon"], "invalid duration for --for 'soon'"),
    (["on", "--for", "0s"], "must be more than zero"),
    (["on", "engine-stall", "--latency-ms", "10"], "fault engine-stall takes no --latency-ms"),
    (["off", "bogus"], "unknown fault 'bogus'"),
    # every duration refused before anything is done (issue 11): no traceback, no record
    (["on", "db-outage", "--for", "nan"], "invalid duration for --for 'nan'"),
    (["on", "db-outage", "--for", "inf"], "invalid duration for --for 'inf': at most 30d"),
    (["on", "db-outage", "--for", "1e400"], "invalid duration for --for '1e400'"),
    (["on", "db-outage", "--for", "3000000d"], "invalid duration for --for '3000000d'"),
    (["on", "api-latency", "--latency-ms", "99999999"], "invalid latency 99999999 ms: use 0"),
    (["on", "api-errors", "--rate", "nan"], "invalid rate nan"),
])
def test_cli_errors_are_one_line(lab_dir, args, message):
    result = cli(lab_dir, *args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output


def test_refused_flags_leave_no_record(lab_dir):
    assert cli(lab_dir, "on", "db-outage", "--for", "nan").exit_code == 1
    assert cli(lab_dir, "on", "api-latency", "--latency-ms", "99999999").exit_code == 1
    assert status(lab_dir) == {}


@pytest.mark.parametrize("text", ['{"faults": []}', "garbage{", '{"faults": {"x": 1}', "[]"])
def test_corrupt_file_is_one_line_and_chaos_off_rewrites_it(lab_dir, text, monkeypatch):
    monkeypatch.setenv("TRADELAB_RUNTIME", "local")  # no lab running: no service to restore
    chaos_file = lab_dir / "state" / "chaos.json"
    chaos_file.parent.mkdir(parents=True, exist_ok=True)
    chaos_file.write_text(text)
    result = cli(lab_dir, "status")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith("error: cannot read") and "chaos off" in result.output
    result = cli(lab_dir, "off")
    assert result.exit_code == 0, result.output
    assert json.loads(chaos_file.read_text()) == {"faults": {}}
    assert status(lab_dir) == {}


def test_readers_clamp_hand_edited_values(path):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"faults": {
        "api-latency": {"since": "2026-01-01T00:00:00Z", "latency_ms": 1e999},
        "exchange-latency": {"since": "2026-01-01T00:00:00Z", "latency_ms": "nan"},
        "api-errors": {"since": "2026-01-01T00:00:00Z", "rate": 1e999},
    }}).replace("Infinity", "1e999"))
    from tradelab.faults import MAX_LATENCY_MS

    for faults in (ChaosReader(path).active(), ChaosStore(path).active()):
        assert faults["api-latency"].latency_ms == MAX_LATENCY_MS
        assert faults["exchange-latency"].latency_ms == 0
        assert faults["api-errors"].rate == 1.0


def test_an_expired_runtime_record_survives_other_chaos_commands(path):
    """The record of a runtime fault whose scheduled off died is kept until its service
    is restored: `chaos on` of another fault must not erase it (it used to)."""
    store = ChaosStore(path)
    store.enable("engine-stall")
    faults = json.loads(path.read_text())["faults"]
    faults["db-outage"] = {"since": "2026-01-01T00:00:00.000Z", "until": "2026-01-01T00:01:00.000Z"}
    path.write_text(json.dumps({"faults": faults}))
    store.enable("api-errors")
    store.disable("engine-stall")
    assert set(store.overdue()) == {"db-outage"}
    assert set(store.active()) == {"api-errors"}  # not shown as on: its time is up


def test_cli_runtime_fault_without_a_running_lab(lab_dir, monkeypatch):
    pytest.importorskip("tradelab.runtimes.local")
    monkeypatch.setenv("TRADELAB_RUNTIME", "local")
    result = cli(lab_dir, "on", "db-outage", "--for", "1m")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "error: no lab is running: start one with `tradelab up`"]
    assert status(lab_dir) == {}  # not recorded: nothing was done
