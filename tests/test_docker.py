"""The Docker runtime against a real engine, with locally built stand-in images.

No registry is reachable on CI, so tests/docker/build-images.sh builds stand-ins with
the official images' interface (postgres, prometheus, alertmanager, locust, a Python
base for the app image) and the lab's tradelab.yaml points `images:` at them. Grafana,
Loki and Promtail cannot be had here: `up --without grafana,loki,promtail`.

The tests share one lab (one `up`) and run in file order: up, traffic, chaos,
idempotency, a changed setting, down/up, down --volumes. Skipped with the reason when
no engine answers or the images cannot be built.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from conftest import free_port
from dockerlab import (
    BASE_IMAGE,
    HERE,
    LABEL_PROJECT,
    STAND_INS,
    WITHOUT,
    Lab,
    chaos_failures,
    order,
    poll,
    until,
    write_lab,
)
from typer.testing import CliRunner

from tradelab.cli.main import app


@pytest.fixture(scope="module")
def docker_lab(images, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("TRADELAB_"):
                mp.delenv(key)
        root = write_lab(tmp_path_factory.mktemp("dockerlab") / "lab",
                         f"tltest-{uuid.uuid4().hex[:8]}")
        the_lab = Lab(root)
        yield the_lab
        the_lab.run("down", "--volumes", "--runtime", "docker", ok=False)


pytestmark = pytest.mark.docker


def test_up_brings_every_service_to_healthy(docker_lab):
    started = time.monotonic()
    result = docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--timeout", "5m")
    print(f"\nup -> all healthy in {time.monotonic() - started:.1f}s", file=sys.stderr)
    # Grafana is left out (WITHOUT): only its row says so, no login for it is printed.
    assert "Grafana login" not in result.stdout
    by_name = docker_lab.assert_running()
    assert by_name["grafana"]["state"] == "missing"
    assert by_name["api"]["url"] == docker_lab.api
    assert by_name["prometheus"]["url"].startswith("http://127.0.0.1:")
    assert by_name["prometheus"]["url"].endswith("/alerts")  # the page this build serves


def test_orders_flow_and_the_engine_fills_them(docker_lab):
    resp = order(docker_lab, f"dock-{uuid.uuid4().hex[:8]}")
    assert resp.status_code == 201, resp.text
    trade_id = resp.json()["id"]
    docker_lab.config["trade_id"] = trade_id
    def executed():
        trade = requests.get(f"{docker_lab.api}/trades/{trade_id}", timeout=5).json()
        return trade["status"] != "NEW" and trade

    final = until("the engine to execute the trade", executed)
    assert final["status"] in ("FILLED", "REJECTED", "FAILED")


def test_published_ports_bind_loopback_only(docker_lab):
    import docker

    for c in docker.from_env().containers.list(filters={"label": f"{LABEL_PROJECT}="
                                                                 f"{docker_lab.project}"}):
        for bindings in (c.attrs["HostConfig"]["PortBindings"] or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings), c.name


def test_prometheus_scrapes_api_engine_and_the_locust_master(docker_lab):
    url = f"http://127.0.0.1:{docker_lab.config['ports']['prometheus']}/api/v1/targets"
    jobs = ("api", "engine", "locust-master")
    health: dict = {}

    def all_up():
        targets = requests.get(url, timeout=5).json()["data"]["activeTargets"]
        health.update({t["labels"].get("job"): (t["health"], t["lastError"]) for t in targets})
        return all(health.get(job, ("?",))[0] == "up" for job in jobs)

    # The master's /metrics needs prometheus_client, which the Locust image lacks:
    # the lab gives it a copy (<rendered>/locust-vendor on PYTHONPATH).
    if not poll(all_up, timeout=90):
        pytest.fail(f"Prometheus targets not all up: {health}")


# -- load on the lab's Locust master ------------------------------------------------------


def _rows_of(docker_lab: Lab, client_order_ids) -> int:
    import psycopg

    from tradelab.lab import Lab as LabDir

    password = LabDir(docker_lab.root).secret("postgres_password")
    url = (f"postgresql://postgres:{password}@127.0.0.1:{docker_lab.config['ports']['postgres']}"
           "/tradelab")
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM trades WHERE client_order_id = ANY(%s)",
                            (sorted(client_order_ids),)).fetchone()[0]


def test_load_on_the_lab_writes_a_ledger_that_matches_the_database(docker_lab):
    from tradelab.loadtest._ledger import read_ledger

    result = docker_lab.run("load", "--users", "5", "--duration", "10s", "--json")
    assert "note:" not in result.stderr, result.stderr  # the master ran TraderUser, steady
    summary = json.loads(result.stdout)
    assert summary["mode"] == "lab" and summary["failures"] == 0, summary
    assert "GET /error" in summary["by_endpoint"], summary["by_endpoint"]  # a trader's call
    # The worker container (the image's user, not root) wrote the ledger in <lab>/state/load.
    ledger = read_ledger(Path(summary["orders"]["ledger"]))
    assert ledger.files and ledger.run_id == summary["run_id"]
    acknowledged = summary["orders"]["acknowledged"]
    assert acknowledged == len(ledger.acknowledged) > 0
    assert ledger.unacknowledged == set()
    assert _rows_of(docker_lab, ledger.attempted) == acknowledged


def test_a_second_run_right_after_one_runs_and_progress_shows_its_rate(docker_lab):
    # Right after the run above, the lab's Locust (2.32) has no worker for a few
    # seconds: a /swarm then is ignored, and `load` must wait for the worker. Its stats
    # report the current rate under another key than the Locust installed here: the
    # live line must read it, not print 0.0 req/s.
    from tradelab.lab import Lab as LabDir
    from tradelab.load import LoadOptions, run_load
    from tradelab.settings import load_settings

    lab_dir = LabDir.from_flag(str(docker_lab.root))
    seen = []
    result = run_load(load_settings(lab_dir), lab_dir, LoadOptions(users=5, spawn_rate=5,
                                                                   duration=8),
                      on_progress=seen.append)
    assert result.mode == "lab" and result.requests > 0
    assert result.ledger is not None and result.ledger.attempted  # this run, not the last
    running = [p for p in seen if p.state == "running" and p.requests > 0]
    assert running and max(p.rps for p in running) > 0, [
        (p.state, p.users, p.rps, p.requests, p.workers) for p in seen]
    assert all(p.workers == 1 for p in running)


def test_load_with_workers_scales_them_and_up_restores_the_setting(docker_lab):
    import docker

    def workers() -> list[str]:
        return sorted(c.name for c in docker.from_env().containers.list(filters={"label": [
            f"{LABEL_PROJECT}={docker_lab.project}", "com.docker.compose.service=locust-worker"]}))

    assert len(workers()) == 1  # load_workers: 1
    first = docker_lab.ids()[f"{docker_lab.project}-locust-worker-1"]
    result = docker_lab.run("load", "--users", "4", "--duration", "6s", "--workers", "2",
                     "--user-type", "reader", "--profile", "spike", "--json")
    assert "note:" not in result.stderr, result.stderr  # the class picker took both
    summary = json.loads(result.stdout)
    assert summary["requests"] > 0 and summary["failures"] == 0, summary
    assert "GET /error" not in summary["by_endpoint"]  # only traders call it: readers ran
    worker = f"{docker_lab.project}-locust-worker"
    assert workers() == [f"{worker}-1", f"{worker}-2"]
    assert docker_lab.ids()[f"{worker}-1"] == first  # added to, not recreated
    up = docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build")
    assert "(fewer replicas)" in up.output, up.output
    assert workers() == [f"{docker_lab.project}-locust-worker-1"]


def test_logs_shows_the_service_json_lines(docker_lab):
    result = docker_lab.run("logs", "api", "--tail", "20")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and all(line["service"] == "api" for line in lines)


def test_chaos_on_makes_failed_trades_investigate_failures_finds_them(docker_lab):
    assert chaos_failures(docker_lab)


def test_db_outage_gives_503_then_recovers_after_chaos_off(docker_lab):
    docker_lab.run("chaos", "on", "db-outage")
    try:
        status = {s["name"]: s for s in docker_lab.status()["services"]}["postgres"]
        assert status["state"] == "exited"
        # (a list: a Response with a 5xx status is falsy)
        [resp] = until("a 503 while the database is down", lambda: (
            r := order(docker_lab, f"out-{uuid.uuid4().hex[:8]}")).status_code == 503 and [r],
            timeout=30)
        assert "Retry-After" in resp.headers
    finally:
        docker_lab.run("chaos", "off")
    until("the API to accept orders again", lambda: order(
        docker_lab, f"back-{uuid.uuid4().hex[:8]}").status_code == 201, timeout=60)


def test_kill_api_then_chaos_off_brings_it_back(docker_lab):
    docker_lab.run("chaos", "on", "kill-api")
    try:
        api = {s["name"]: s for s in docker_lab.status()["services"]}["api"]
        assert api["state"] == "exited"
    finally:
        docker_lab.run("chaos", "off")
    until("the API to answer again", lambda: requests.get(
        f"{docker_lab.api}/healthz", timeout=3).status_code == 200, timeout=60)


def test_network_cut_leaves_the_engine_running_unreachable_until_ops_restart(docker_lab):
    """network-cut: the engine's container leaves the lab's network. It runs on; the API
    still acknowledges orders, which stay NEW; Prometheus cannot scrape the engine. The
    catalogue's lever, `ops restart engine`, puts it back, and the orders execute."""
    import docker

    prometheus = f"http://127.0.0.1:{docker_lab.config['ports']['prometheus']}/api/v1/query"

    def engine_up() -> float | None:
        result = requests.get(prometheus, params={"query": 'up{job="engine"}'},
                              timeout=5).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    [engine] = docker.from_env().containers.list(filters={"label": [
        f"{LABEL_PROJECT}={docker_lab.project}", "com.docker.compose.service=engine"]})
    until("Prometheus to scrape the engine", lambda: engine_up() == 1, timeout=60)
    docker_lab.run("chaos", "on", "network-cut")
    try:
        engine.reload()
        assert engine.status == "running" and not engine.attrs["NetworkSettings"]["Networks"]
        resp = order(docker_lab, f"cut-{uuid.uuid4().hex[:8]}")
        assert resp.status_code == 201, resp.text  # the API still reaches PostgreSQL
        trade = f"{docker_lab.api}/trades/{resp.json()['id']}"
        until("Prometheus to see the engine down", lambda: engine_up() == 0, timeout=60)
        assert requests.get(trade, timeout=5).json()["status"] == "NEW"
        docker_lab.run("ops", "restart", "engine")  # the lever, with the fault still on
        engine.reload()
        assert list(engine.attrs["NetworkSettings"]["Networks"]) == [
            f"{docker_lab.project}_default"]
        until("the engine to execute the order", lambda: requests.get(
            trade, timeout=5).json()["status"] != "NEW", timeout=60)
        until("Prometheus to scrape the engine again", lambda: engine_up() == 1, timeout=60)
    finally:
        docker_lab.run("chaos", "off", "network-cut")


def test_pause_unpause_and_restart_are_real_on_docker(docker_lab):
    from tradelab.lab import Lab as TradelabLab
    from tradelab.orchestrator import select_driver
    from tradelab.settings import load_settings

    home = TradelabLab(docker_lab.root)
    driver = select_driver(load_settings(home, env={}), home, "docker")
    before = driver.containers("api")[0].attrs["State"]["StartedAt"]
    driver.pause("api")
    try:
        assert driver.inspect("api").state == "paused"
        assert {s["name"]: s for s in docker_lab.status()["services"]}["api"]["state"] == "paused"
        with pytest.raises(requests.RequestException):
            requests.get(f"{docker_lab.api}/healthz", timeout=2)
    finally:
        driver.unpause("api")
    until("the API to answer after unpause", lambda: requests.get(
        f"{docker_lab.api}/healthz", timeout=3).status_code == 200, timeout=30)
    assert driver.containers("api")[0].attrs["State"]["StartedAt"] == before  # the same one
    driver.restart("api")
    assert driver.containers("api")[0].attrs["State"]["StartedAt"] != before
    until("the API to answer after restart", lambda: requests.get(
        f"{docker_lab.api}/healthz", timeout=3).status_code == 200, timeout=60)
    result = driver.exec("postgres", ["pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres"])
    assert result.exit_code == 0, result.output


def test_ops_restart_comes_back_healthy_and_loses_no_order(docker_lab):
    from support.restart import restart_loses_no_order

    def cli(*args: str) -> tuple[int, str]:
        result = docker_lab.run(*args, ok=False)
        return result.exit_code, result.stdout if result.exit_code == 0 else result.output

    restart_loses_no_order(cli, docker_lab.api, docker_lab.root)


def test_a_killed_service_is_mitigated_by_ops_restart_not_chaos_off(docker_lab):
    """kill-engine and kill-api (a killed container stays down on Docker): the
    catalogue's lever brings each back; an order acknowledged meanwhile is executed."""
    for fault, service in (("kill-engine", "engine"), ("kill-api", "api")):
        docker_lab.run("chaos", "on", fault, "--for", "5m")
        try:
            state = {s["name"]: s for s in docker_lab.status()["services"]}[service]["state"]
            assert state == "exited", (fault, state)
            acknowledged = order(docker_lab, f"{fault}-{uuid.uuid4().hex[:8]}") \
                if service == "engine" else None
            out = json.loads(docker_lab.run("ops", "restart", service, "--json").stdout)
            assert (out["after"], out["health"]) == ("running", "healthy"), out
            if acknowledged is not None:
                assert acknowledged.status_code == 201, acknowledged.text
                trade = acknowledged.json()["id"]
                until("the order acknowledged while the engine was down to execute",
                      lambda trade=trade: requests.get(
                          f"{docker_lab.api}/trades/{trade}", timeout=5).json()["status"]
                      != "NEW", timeout=60)
            assert requests.get(f"{docker_lab.api}/readyz", timeout=5).status_code == 200
        finally:
            docker_lab.run("chaos", "off", ok=False)


def test_second_up_changes_nothing(docker_lab):
    # A first `up` takes in any change to the package since the lab came up (in a
    # shared work tree, others edit it); right after it, `up` must change nothing.
    docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT)
    before = docker_lab.ids()
    result = docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT)
    assert docker_lab.ids() == before, result.output
    assert "creating" not in result.output and "building" not in result.output, result.output


def test_changed_setting_recreates_only_what_it_affects(docker_lab):
    before = docker_lab.ids()
    config = yaml.safe_load((docker_lab.root / "tradelab.yaml").read_text())
    config["engine"] = {"order_rate": 3.0}
    (docker_lab.root / "tradelab.yaml").write_text(yaml.safe_dump(config))
    docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build")
    after = docker_lab.ids()
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed == {f"{docker_lab.project}-engine-1"}


def test_a_level_1_drill_is_played_to_a_passing_scorecard(docker_lab):
    # Rule windows scaled and 1s scrapes (as tests/test_drill.py), so that a db-outage
    # pages and clears within seconds; `up` recreates what that changes.
    config = yaml.safe_load((docker_lab.root / "tradelab.yaml").read_text())
    config.update(slo={"window_scale": 0.02},
                  prometheus={"scrape_interval_s": 1, "evaluation_interval_s": 1})
    (docker_lab.root / "tradelab.yaml").write_text(yaml.safe_dump(config))
    docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build")

    def drill(*args: str) -> dict:
        return json.loads(docker_lab.run("drill", *args, "--json").stdout)

    def pages() -> set[str]:
        alerts = json.loads(docker_lab.run("alerts", "--json").stdout)
        return {a["alertname"] for a in alerts if a["severity"] == "page"}

    # The faults of the tests before page for a while: the drill starts on a quiet lab.
    until("the earlier tests' pages to resolve", lambda: not pages(), timeout=180)
    started = drill("start", "--seed", "11", "--scenario", "db-outage", "--window", "2s-3s",
                    "--sustain", "5s")
    assert "db-outage" not in json.dumps(started)
    from tradelab.drill.session import last_session
    from tradelab.lab import Lab as TradelabLab

    session = last_session(TradelabLab(docker_lab.root))
    until("the injection", lambda: session.first("injected"), timeout=60)
    until("the page", lambda: "DatabaseDown" in pages(), timeout=120)
    drill("ack")
    drill("diagnose", "db-outage")
    docker_lab.run("ops", "restart", "postgres")
    until("the drill to complete", lambda: drill("status")["state"] == "completed",
          timeout=240)
    card = drill("end")
    assert card["passed"] and card["outcome"] == "completed", card
    assert card["trades_lost"] == 0 and card["harmful_actions"]["count"] == 0
    assert Path(card["files"]["postmortem"]).read_text().count("## Timeline") == 1


@pytest.mark.parametrize("scenario", ["db-outage", "exchange-errors", "network-cut"])
def test_a_game_day_on_docker_detects_recovers_and_loses_nothing(docker_lab, scenario):
    """Bundled game days on the Docker runtime (a database stopped through the driver, a
    venue failing inside the engine, the engine cut off the network, which only Docker
    can do), with the shortened timings of tests/test_gameday.py; the rest of the
    catalogue runs on the local runtime there."""
    from test_gameday import FAST, _assert_report, _valid_journal

    config = yaml.safe_load((docker_lab.root / "tradelab.yaml").read_text())
    if config.get("slo") != {"window_scale": 0.02}:  # as the drill test left it
        config.update(slo={"window_scale": 0.02},
                      prometheus={"scrape_interval_s": 1, "evaluation_interval_s": 1})
        (docker_lab.root / "tradelab.yaml").write_text(yaml.safe_dump(config))
        docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build")

    def pages() -> set[str]:
        alerts = json.loads(docker_lab.run("alerts", "--json").stdout)
        return {a["alertname"] for a in alerts if a["severity"] == "page"}

    until("the earlier tests' pages to resolve", lambda: not pages(), timeout=180)
    # No other load may write orders during this one's window (verify counts them as
    # unexpected): the drill's load and the last game day's stragglers are let through.
    docker_lab.run("load", "stop", ok=False)
    time.sleep(5)
    result = subprocess.run(
        [sys.executable, "-m", "tradelab", "--lab-dir", str(docker_lab.root), "gameday",
         "run", scenario, *FAST, "--json"], capture_output=True, text=True, timeout=400)
    out = json.loads(result.stdout)
    counts = out["reconciliation"]["counts"]
    # Nothing acknowledged is lost, altered or duplicated. Rows the run never attempted
    # ("unexpected") come from the lab's other load (its Locust containers, the drill's
    # run) on this shared lab: counted, not a loss. Exit 1 then says only that.
    assert counts["lost"] == counts["altered"] == counts["duplicate"] == 0, out
    assert result.returncode == 0 or counts["unexpected"] > 0, result.stderr[-3000:]
    print(f"\n[docker] {scenario}: detect {out['time_to_detect_s']}s, recover "
          f"{out['time_to_recover_s']}s, {out['reconciliation']['summary']}", file=sys.stderr)
    journal = _valid_journal(Path(out["directory"]))
    assert journal["reconciliation"]["counts"]["ok"] > 0
    assert any(a["alertname"] == out["expected_alert"] for a in out["alerts_seen"])
    _assert_report(Path(out["directory"]))


def test_doctor_passes_while_the_lab_runs(docker_lab):
    result = docker_lab.run("doctor", "--runtime", "docker", "--without", WITHOUT)
    assert "FAIL" not in result.stdout
    assert "ports.api" in result.stdout


def test_down_then_up_keeps_the_data(docker_lab):
    trade_id = docker_lab.config["trade_id"]
    docker_lab.run("down")
    left = docker_lab.leftovers()
    assert left["containers"] == [] and left["networks"] == []
    assert left["volumes"], "data volumes must survive `down`"
    docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build")
    resp = requests.get(f"{docker_lab.api}/trades/{trade_id}", timeout=5)
    assert resp.status_code == 200 and resp.json()["id"] == trade_id


def test_down_volumes_leaves_nothing(docker_lab):
    ledgers = docker_lab.root / "state" / "load"
    had_ledgers = ledgers.is_dir()
    result = docker_lab.run("down", "--volumes")
    assert docker_lab.leftovers() == {"containers": [], "volumes": [], "networks": []}
    # It says what it removed: each volume, and the load ledgers of the deleted database.
    lines = result.stdout.splitlines()
    assert lines[:2] == ["lab is down (docker runtime)", "removed the lab's data:"], lines
    assert any(line.startswith(f"  volume {docker_lab.project}") for line in lines[2:]), lines
    assert (f"  {ledgers} (" in result.stdout) == had_ledgers and not ledgers.exists()
    report = docker_lab.status()
    assert (report["up"], report["runtime"], report["services"]) == (False, "docker", [])


# -- failures a user meets ----------------------------------------------------------------


def test_failed_up_removes_what_it_created(images, tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    # A "postgres" that cannot start: the Prometheus stand-in refuses the argument.
    broken = Lab(write_lab(tmp_path / "lab", f"tlfail-{uuid.uuid4().hex[:8]}",
                      images={**STAND_INS, "postgres": STAND_INS["prometheus"]}))
    result = broken.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build",
                        "--timeout", "60s", ok=False)
    assert result.exit_code == 1
    assert result.output.count("Traceback") == 0
    assert "error: postgres stopped" in result.output and "last log lines" in result.output
    assert broken.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_port_in_use_is_named_with_its_setting(images, tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    busy = Lab(write_lab(tmp_path / "lab", f"tlport-{uuid.uuid4().hex[:8]}"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", busy.config["ports"]["api"]))
        sock.listen()
        result = busy.run("up", "--runtime", "docker", "--without", WITHOUT, ok=False)
    port = busy.config["ports"]["api"]
    assert result.exit_code == 1
    assert f"error: port {port} (ports.api) is in use" in result.output
    assert busy.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_two_settings_with_one_port_are_named_before_anything_is_created(images, tmp_path,
                                                                        monkeypatch):
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    docker_lab = Lab(write_lab(tmp_path / "lab", f"tlsame-{uuid.uuid4().hex[:8]}"))
    port = docker_lab.config["ports"]["api"]
    config = {**docker_lab.config, "ports": {**docker_lab.config["ports"], "prometheus": port}}
    (docker_lab.root / "tradelab.yaml").write_text(yaml.safe_dump(config))
    doctor = docker_lab.run("doctor", "--runtime", "docker", ok=False)
    result = docker_lab.run("up", "--runtime", "docker", "--without", WITHOUT, "--no-build",
                            ok=False)
    assert result.exit_code == 1
    message = (f"api and prometheus would both publish port {port} "
               "(ports.api = ports.prometheus)")
    assert f"error: {message}" in result.output, result.output
    assert message in doctor.output, doctor.output
    assert docker_lab.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_every_image_that_cannot_be_had_is_named_at_once_before_anything_is_created(
        images, tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    nowhere = {"postgres": "tradelab-test/no-such-postgres:1",
               "prometheus": "tradelab-test/no-such-prometheus:1"}
    lab = Lab(write_lab(tmp_path / "lab", f"tlimg-{uuid.uuid4().hex[:8]}",
                        images={**STAND_INS, **nowhere},
                        build={"base_image": "tradelab-test/no-such-python:1"}))
    result = lab.run("up", "--runtime", "docker", "--without", WITHOUT, ok=False)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    error = errors[0]
    for named in ("tradelab-test/no-such-postgres:1 for postgres (images.postgres)",
                  "tradelab-test/no-such-prometheus:1 for prometheus (images.prometheus)",
                  "tradelab-test/no-such-python:1 for the app image's base (build.base_image)",
                  "`tradelab up --runtime local`"):
        assert named in error, error
    assert "pulling" not in result.output and "building" not in result.output, result.output
    assert lab.leftovers() == {"containers": [], "volumes": [], "networks": []}

    doctor = lab.run("doctor", "--runtime", "docker", "--without", WITHOUT, "--json",
                     ok=False)
    assert doctor.exit_code == 1
    report = json.loads(doctor.stdout)
    failed = {c["check"]: c["detail"] for c in report["checks"] if c["ok"] is False}
    assert failed["images"] == error.removeprefix("error: ")
    assert set(failed) == {"images", *(f"image {ref}" for ref in nowhere.values()),
                           "image tradelab-test/no-such-python:1"}


def test_unreachable_docker_is_one_line(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["--lab-dir", str(tmp_path), "up", "--runtime", "docker"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: Docker is not reachable: start Docker "
                                     "or use --runtime local")


def test_app_image_builds_from_a_wheel_install(images, tmp_path):
    """Not only from this editable checkout: from the files a wheel installed."""
    import shutil

    import docker

    repo = HERE.parent
    src = tmp_path / "src-copy"  # build the wheel off a copy: no build/ in the work tree
    shutil.copytree(repo / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (repo / name).is_file():
            shutil.copy(repo / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site),
                    *map(str, (tmp_path / "dist").glob("tradelab-*.whl"))], check=True,
                   timeout=300)
    tag = f"tradelab-test/app-from-wheel:{uuid.uuid4().hex[:8]}"
    code = ("import sys, tradelab, docker\n"
            "from tradelab.runtimes.docker_image import ensure_app_image\n"
            "print(tradelab.__file__)\n"
            f"ensure_app_image(docker.from_env(), {tag!r}, {BASE_IMAGE!r}, True,"
            " lambda line: print(line, file=sys.stderr))\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.splitlines()[0].startswith(str(site)), proc.stdout
        out = docker.from_env().containers.run(tag, ["--version"], remove=True)
        assert out.decode().startswith("tradelab ")
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_rebuilt_app_images_leave_no_unused_image_behind(images):
    """A rebuild moves the tag; the old image goes, unless a container still uses it."""
    import io

    import docker
    from docker.errors import ImageNotFound

    from tradelab.const import LABEL_CONTEXT_HASH
    from tradelab.runtimes.docker_image import remove_replaced_app_images

    client = docker.from_env()
    repo = f"tradelab-test/rebuilt-{uuid.uuid4().hex[:8]}"

    def build(tag: str, content: str) -> str:
        dockerfile = f"FROM {BASE_IMAGE}\nLABEL test.content={content}\n".encode()
        image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:{tag}",
                                       labels={LABEL_CONTEXT_HASH: content}, rm=True)
        return image.id

    def exists(image_id: str) -> bool:
        try:
            client.images.get(image_id)
            return True
        except ImageNotFound:
            return False

    container = unused = in_use = None
    made: list[str] = []
    try:
        unused = build("a", uuid.uuid4().hex)
        made.append(build("a", uuid.uuid4().hex))  # moves the tag: `unused` is <none> now
        in_use = build("b", uuid.uuid4().hex)
        container = client.containers.create(in_use, ["true"])
        made.append(build("b", uuid.uuid4().hex))
        assert exists(unused) and exists(in_use)
        remove_replaced_app_images(client)
        assert not exists(unused)
        assert exists(in_use)  # Docker refuses while a container uses it
        assert all(exists(i) for i in made)  # tagged images are never touched
    finally:
        if container is not None:
            container.remove(force=True)
        for image_id in [i for i in (*made, in_use, unused) if i]:
            try:
                client.images.remove(image_id, force=True)
            except Exception:  # noqa: BLE001 - cleanup
                pass
