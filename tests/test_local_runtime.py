"""The local runtime end to end: real supervisord, PostgreSQL, gunicorn, engine, Prometheus.

One lab for the module (a cold `up` is the expensive part), under pytest's temp dir,
which is mode 0700 as root: the same situation as a lab under /root, so the cluster's
data ends up outside the lab (see tradelab.runtimes.local_postgres). The tests run in
file order and share that lab; the fixture always brings it down, data included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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
from support.cli import run
from support.polling import wait_for

from tradelab.errors import TradelabError
from tradelab.lab import Lab
from tradelab.orchestrator import converge, up
from tradelab.runtimes.base import Action
from tradelab.runtimes.local import LocalRuntime, session_processes
from tradelab.runtimes.local_postgres import postgres_data_dir, remove_postgres_data
from tradelab.settings import load_settings

pytestmark = pytest.mark.slow

PORT_KEYS = ("api", "engine", "postgres", "prometheus", "alertmanager", "locust",
             "locust_master")


class LocalLab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lab = Lab(root)
        self.settings = load_settings(self.lab, env={})
        self.messages: list[str] = []
        self.timings: dict[str, float] = {}

    def runtime(self) -> LocalRuntime:
        return LocalRuntime(self.settings, self.lab, echo=self.messages.append)

    def up(self, label: str) -> list:
        self.messages.clear()
        started = time.monotonic()
        statuses = up(self.settings, self.lab, "local", timeout=180,
                      echo=self.messages.append).services
        self.timings[label] = time.monotonic() - started
        return statuses

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings.ports.api}"

    def pid(self, service: str) -> int:
        return self.runtime().supervisor.process_info()[service]["pid"]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run(*args, env={"TRADELAB_HOME": str(self.root)})


def write_ports(root: Path) -> dict[str, int]:
    ports = {key: free_port() for key in PORT_KEYS}
    root.mkdir(parents=True, exist_ok=True)
    # runtime: local, so that chaos and the CLI never look for this lab in Docker.
    (root / "tradelab.yaml").write_text(yaml.safe_dump({"ports": ports, "runtime": "local"}))
    return ports


@pytest.fixture(scope="module")
def local_lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "lab"
    write_ports(root)
    lab = LocalLab(root)
    outside = postgres_data_dir(lab.lab)
    try:
        lab.up("cold")
        yield lab
    finally:
        lab.runtime().down(volumes=True)
        assert not outside.exists(), "down --volumes left the database behind"
        for label, seconds in lab.timings.items():
            print(f"\n[local runtime] {label} `up` to all healthy: {seconds:.1f}s")


def ready(url: str) -> bool:
    try:
        return requests.get(url + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def post_trade(api: str) -> dict:
    body = {"client_order_id": f"t-{uuid.uuid4().hex[:16]}", "symbol": "AAPL",
            "side": "BUY", "quantity": 10}
    r = requests.post(api + "/trades", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def settled(api: str, trade_id: int, statuses=("FILLED", "REJECTED", "FAILED")):
    r = requests.get(f"{api}/trades/{trade_id}", timeout=5)
    return r.json() if r.status_code == 200 and r.json()["status"] in statuses else None


def lab_processes(lab: LocalLab) -> list[str]:
    """Command lines of live processes that mention the lab or its database directory."""
    marks = (str(lab.root), str(postgres_data_dir(lab.lab)))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(mark in cmdline for mark in marks):
            found.append(f"{entry}: {cmdline}")
    return found


def test_up_brings_every_service_healthy(local_lab):
    by_name = {s.name: s for s in local_lab.runtime().status()}
    for name in ("postgres", "api", "engine", "prometheus", "alertmanager"):
        assert (by_name[name].state, by_name[name].health) == ("running", "healthy"), name
    assert (by_name["migrate"].state, by_name["migrate"].detail) == ("exited", "exit 0")
    if by_name["locust-master"].state != "unavailable":  # once a locustfile ships
        assert by_name["locust-master"].health == "healthy"
    for name in ("grafana", "loki", "promtail"):
        assert by_name[name].state == "unavailable"
        assert by_name[name].detail == "not available in the local runtime"
    assert by_name["api"].url == local_lab.api
    assert local_lab.runtime().is_up()
    # As root the cluster cannot live under a 0700 directory: it is kept outside, linked.
    if os.geteuid() == 0:
        assert (local_lab.root / "data" / "postgres").is_symlink()
    assert (local_lab.root / "state" / "logs" / "api.log").stat().st_size > 0


def test_second_up_is_a_noop_and_the_cli_sees_the_lab(local_lab):
    before = {name: local_lab.pid(name) for name in ("postgres", "api", "engine")}
    started = time.monotonic()
    result = local_lab.cli("up")
    local_lab.timings["second (no-op)"] = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stderr
    assert {name: local_lab.pid(name) for name in before} == before
    # `up` prints the table `status` does, the detail column saying why what does not run
    # does not; nothing else about services that do not run (no Grafana login).
    header, *rows = result.stdout.splitlines()[1:]
    assert header.split() == ["name", "state", "health", "url", "detail"]
    assert any(row.split()[:2] == ["grafana", "unavailable"]
               and row.endswith("not available in the local runtime") for row in rows)
    assert "Grafana" not in result.stdout and "grafana_admin_password" not in result.stdout

    status = local_lab.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["runtime"] == "local"
    states = {s["name"]: (s["state"], s["health"]) for s in report["services"]}
    assert states["api"] == ("running", "healthy")
    assert states["grafana"][0] == "unavailable"

    logs = local_lab.cli("logs", "postgres", "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    assert 0 < len(logs.stdout.splitlines()) <= 5
    missing = local_lab.cli("logs", "grafana")
    assert missing.returncode == 1
    assert "not available in the local runtime" in missing.stderr


def test_the_plan_starts_only_what_is_not_running_after_what_it_needs(local_lab):
    """The orchestrator's plan over the driver's primitives: nothing to do on a lab
    that runs; a stopped engine is started (only it), and waited for until healthy."""
    runtime = local_lab.runtime()
    names = runtime.selectable(None, None)
    steps = converge(runtime, names, build=False, timeout=60, echo=local_lab.messages.append)
    assert {s.action for s in steps} == {Action.NOTHING}
    before = {name: local_lab.pid(name) for name in ("postgres", "api")}
    runtime.stop("engine")
    local_lab.messages.clear()
    steps = converge(local_lab.runtime(), names, build=False, timeout=60,
                     echo=local_lab.messages.append)
    assert {s.service: s.action for s in steps if s.action is not Action.NOTHING} == {
        "engine": Action.START}
    assert "starting engine" in local_lab.messages and "engine healthy" in local_lab.messages
    assert local_lab.runtime().inspect("engine").health == "healthy"
    assert {name: local_lab.pid(name) for name in before} == before


def test_a_plain_up_finds_the_local_lab_where_it_runs(local_lab):
    """runtime auto (Docker first, when it answers): `up` and `status` still find the
    local lab, and never call its own ports taken; another runtime is refused."""
    env = {"TRADELAB_HOME": str(local_lab.root), "TRADELAB_RUNTIME": "auto"}
    result = run("up", env=env)
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stderr and "in use" not in result.stderr, result.stderr
    report = json.loads(run("status", "--json", env=env).stdout)
    assert (report["up"], report["runtime"]) == (True, "local")
    other = run("up", "--runtime", "docker", env=env)
    assert other.returncode == 1
    assert other.stderr.strip() == (
        "error: the lab is up on the local runtime: take it down first (`tradelab down`), "
        "then `tradelab up --runtime docker`")


def test_every_url_status_prints_opens_a_page(local_lab):
    """The URLs are those of the binaries running here (Debian's Prometheus serves its
    alerts page at /classic/alerts, Prometheus 3 at /alerts); a server with no web UI
    (Debian's Alertmanager) gets no URL, and its detail names the command instead."""
    report = json.loads(local_lab.cli("status", "--json").stdout)
    by_name = {s["name"]: s for s in report["services"]}
    direct = requests.Session()
    direct.trust_env = False  # straight to 127.0.0.1, whatever HTTP_PROXY says
    for service in report["services"]:
        if service["state"] == "running" and (service["url"] or "").startswith("http"):
            assert direct.get(service["url"], timeout=5).status_code == 200, service
    assert by_name["prometheus"]["url"].endswith("/alerts")
    alertmanager = by_name["alertmanager"]
    ui = direct.get(f"http://127.0.0.1:{local_lab.settings.ports.alertmanager}/script.js",
                    timeout=5).status_code == 200
    assert (alertmanager["url"] is not None) == ui, alertmanager
    if not ui:
        assert "no web UI in this build: `tradelab alerts`" in alertmanager["detail"]


def test_orders_flow_then_chaos_failures_are_investigated(local_lab):
    api = local_lab.api
    trade = post_trade(api)
    done = wait_for(lambda: settled(api, trade["id"], ("FILLED", "REJECTED")), 30,
                    "the engine to execute the trade")
    assert done["status"] in ("FILLED", "REJECTED")

    on = local_lab.cli("chaos", "on", "exchange-errors", "--rate", "1.0")
    assert on.returncode == 0, on.stderr
    try:
        time.sleep(2.5)  # services re-read chaos.json within about 2 s
        failed = post_trade(api)
        wait_for(lambda: settled(api, failed["id"], ("FAILED",)), 30, "a FAILED trade")
        result = local_lab.cli("investigate-failures", "--json", "--since", "10m")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        ids = {f["id"] for f in report["failures"]}
        assert failed["id"] in ids
        assert all(f["status"] == "FAILED" and f["failure_reason"] for f in report["failures"])
    finally:
        local_lab.cli("chaos", "off")


def test_killed_api_and_engine_come_back(local_lab):
    runtime = local_lab.runtime()
    api_pid = local_lab.pid("api")
    runtime.kill("api")
    with pytest.raises(requests.RequestException):
        requests.get(local_lab.api + "/healthz", timeout=2)
    wait_for(lambda: local_lab.pid("api") not in (0, api_pid) and ready(local_lab.api), 60,
             "the api to be restarted by supervisord")

    engine_pid = local_lab.pid("engine")
    result = local_lab.cli("chaos", "on", "kill-engine")  # the same, through chaos
    assert result.returncode == 0, result.stderr
    wait_for(lambda: local_lab.pid("engine") not in (0, engine_pid), 60, "a new engine")
    local_lab.cli("chaos", "off")

    def both_healthy():
        by_name = {s.name: s for s in runtime.status()}
        return all(by_name[n].health == "healthy" for n in ("api", "engine")) and by_name

    by_name = wait_for(both_healthy, 60, "api and engine healthy")
    assert by_name["engine"].state == "running"


def test_load_runs_on_the_lab_master_and_prometheus_scrapes_it(local_lab):
    runtime = local_lab.runtime()
    if runtime.plan.by_name["locust-master"].unavailable:
        pytest.skip(runtime.plan.by_name["locust-master"].unavailable)
    # A profile and a user type other than the defaults: the lab's master loads every
    # bundled locustfile with the class picker, so it runs them without a note.
    result = local_lab.cli("load", "--users", "4", "--duration", "6s", "--profile", "spike",
                           "--user-type", "reader", "--json")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "lab" and summary["requests"] > 0 and summary["failures"] == 0
    assert "GET /error" not in summary["by_endpoint"]  # only traders call it
    assert summary["orders"]["acknowledged"] == summary["orders"]["attempted"] > 0

    prometheus = f"http://127.0.0.1:{local_lab.settings.ports.prometheus}/api/v1/targets"

    def master_target():
        targets = requests.get(prometheus, timeout=5).json()["data"]["activeTargets"]
        found = [t for t in targets if t["labels"].get("job") == "locust-master"]
        return found and found[0]["health"] == "up" and found[0]

    # The master's /metrics answers the scrape (its helper modules are imported at load).
    wait_for(master_target, 60, "Prometheus to report the locust-master target up")


def test_locust_workers_scale_and_up_restores_the_setting(local_lab):
    runtime = local_lab.runtime()
    if runtime.plan.by_name["locust-worker"].unavailable:
        pytest.skip(runtime.plan.by_name["locust-worker"].unavailable)
    runtime.scale("locust-worker", 2)
    worker = {s.name: s for s in runtime.status()}["locust-worker"]
    assert worker.state == "running" and worker.detail.startswith("2 replicas"), worker
    local_lab.up("after scale")
    assert any("restarting locust-worker" in m for m in local_lab.messages)
    worker = {s.name: s for s in local_lab.runtime().status()}["locust-worker"]
    assert worker.state == "running" and worker.detail.startswith("pid "), worker


def test_db_outage_through_the_supervisor(local_lab):
    runtime = local_lab.runtime()
    runtime.stop("postgres")
    try:
        wait_for(lambda: requests.get(local_lab.api + "/readyz", timeout=5).status_code == 503,
                 30, "the api to report the database gone")
    finally:
        runtime.start("postgres")
    wait_for(lambda: ready(local_lab.api), 60, "the api to recover")


def test_pause_freezes_the_whole_process_group_and_unpause_wakes_it(local_lab):
    runtime = local_lab.runtime()
    pid = local_lab.pid("api")
    runtime.pause("api")
    try:
        # gunicorn's workers too: no worker answers while the group is stopped.
        with pytest.raises(requests.RequestException):
            requests.get(local_lab.api + "/healthz", timeout=2)
        assert runtime.inspect("api").state == "paused"
    finally:
        runtime.unpause("api")
    wait_for(lambda: ready(local_lab.api), 30, "the api to answer again")
    assert runtime.inspect("api").state == "running"
    assert local_lab.pid("api") == pid  # the same process: frozen, never restarted


def test_restart_gives_a_new_process_that_comes_back_healthy(local_lab):
    runtime = local_lab.runtime()
    pid = local_lab.pid("engine")
    runtime.restart("engine")
    assert local_lab.pid("engine") not in (0, pid)
    wait_for(lambda: runtime.health("engine") == "healthy", 60, "the engine healthy")
    result = runtime.exec("engine", [sys.executable, "-c",
                                     "import os; print(os.environ['TRADELAB_HOME'])"])
    assert (result.exit_code, result.output.strip()) == (0, str(local_lab.root))


def test_ops_restart_comes_back_healthy_and_loses_no_order(local_lab):
    from support.restart import restart_loses_no_order

    engine_pid, api_pid = local_lab.pid("engine"), local_lab.pid("api")

    def cli(*args: str) -> tuple[int, str]:
        result = local_lab.cli(*args)
        return result.returncode, result.stdout if result.returncode == 0 else result.stderr

    restart_loses_no_order(cli, local_lab.api, local_lab.root)
    assert local_lab.pid("engine") not in (0, engine_pid)  # new processes, not the old ones
    assert local_lab.pid("api") not in (0, api_pid)


def test_db_pause_hangs_connections_yet_the_api_answers_503_in_time(local_lab):
    """db-pause freezes PostgreSQL (SIGSTOP): connections hang rather than being refused,
    and the API still answers POST /trades with a 503 inside its pool timeout, and its
    /metrics (which probes the database) says tradelab_db_up 0 instead of hanging the
    scrape, which would hide DatabaseDown (the API's client-side watchdog, issue 13)."""
    result = local_lab.cli("chaos", "on", "db-pause")
    assert result.returncode == 0, result.stderr
    try:
        assert {s.name: s.state.value for s in local_lab.runtime().status()}["postgres"] \
            == "paused"
        body = {"client_order_id": f"p-{uuid.uuid4().hex[:12]}", "symbol": "AAPL",
                "side": "BUY", "quantity": 1}
        wait_for(lambda: requests.post(local_lab.api + "/trades", json=body,
                                       timeout=15).status_code == 503,
                 60, "a 503 (not a hang) from the api")
        for _ in range(3):  # a pooled connection taken before the freeze, and fresh ones
            metrics = requests.get(local_lab.api + "/metrics", timeout=10).text
            assert "\ntradelab_db_up 0.0" in metrics, metrics[-2000:]
    finally:
        result = local_lab.cli("chaos", "off")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: ready(local_lab.api), 60, "the api to see the database again")


def scheduled_offs(lab: LocalLab) -> list[int]:
    """Pids of the detached `tradelab chaos off --after` processes of the lab."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(lab.root).encode() in argv and b"--after" in argv and b"off" in argv:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("command", [
    ("chaos", "status", "--json"), ("status", "--json"), ("watch", "--once", "--json"),
], ids=["chaos-status", "status", "watch"])
def test_a_runtime_fault_ends_even_if_its_scheduled_off_died(local_lab, command):
    """A db-outage whose detached `chaos off --after` died (killed here) and whose time
    is then up: whichever tradelab command looks first restarts PostgreSQL, instead of
    showing the fault off and the service merely stopped (issue 11)."""
    result = local_lab.cli("chaos", "on", "db-outage", "--for", "1h")
    assert result.returncode == 0, result.stderr
    try:
        offs = wait_for(lambda: scheduled_offs(local_lab), 10, "the scheduled chaos off")
        for pid in offs:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not scheduled_offs(local_lab), 10, "the scheduled off to die")
        chaos_file = local_lab.lab.chaos_file
        faults = json.loads(chaos_file.read_text())["faults"]
        faults["db-outage"]["until"] = faults["db-outage"]["since"]  # its time is up
        chaos_file.write_text(json.dumps({"faults": faults}))  # ... and nobody came
        states = {s.name: s.state for s in local_lab.runtime().status()}
        assert states["postgres"] != "running"
        result = local_lab.cli(*command)
        assert result.returncode == 0, result.stderr
        assert "db-outage was past its end; its service is restored" in result.stderr
        assert {s.name: s.state for s in local_lab.runtime().status()}["postgres"] == "running"
        if command[0] == "chaos":
            assert json.loads(result.stdout) == {"faults": []}
        if command[0] == "status":
            report = json.loads(result.stdout)
            assert report["chaos"] == {}
            assert {s["name"]: s["state"] for s in report["services"]}["postgres"] == "running"
        assert local_lab.lab.chaos_file.is_file()
        assert "db-outage" not in json.loads(chaos_file.read_text())["faults"]
        wait_for(lambda: ready(local_lab.api), 60, "the api to see the database again")
    finally:
        local_lab.cli("chaos", "off")


def test_port_taken_is_one_clear_line(tmp_path, local_lab):
    ports = write_ports(tmp_path / "other")
    other = LocalLab(tmp_path / "other")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["api"]))
        busy.listen()
        with pytest.raises(TradelabError) as err:
            up(other.settings, other.lab, "local", timeout=30)
    assert str(err.value) == (f"port {ports['api']} (ports.api) is already in use: "
                              "free it or set ports.api in tradelab.yaml")
    assert not other.runtime().is_up()


def test_two_settings_with_one_port_are_named_before_anything_starts(tmp_path):
    root = tmp_path / "twice"
    ports = write_ports(root)
    config = yaml.safe_load((root / "tradelab.yaml").read_text())
    config["ports"]["locust_master"] = ports["api"]
    (root / "tradelab.yaml").write_text(yaml.safe_dump(config))
    lab = LocalLab(root)
    with pytest.raises(TradelabError) as err:
        up(lab.settings, lab.lab, "local", timeout=30)
    assert str(err.value).startswith(
        f"api and locust-master would both listen on port {ports['api']}")
    assert str(err.value).endswith("give each its own port in tradelab.yaml")
    assert not lab.runtime().is_up()


def test_down_leaves_no_process_and_data_survives(local_lab):
    api = local_lab.api
    posted = post_trade(api)
    trade = wait_for(lambda: settled(api, posted["id"]), 30, "the engine to settle the trade")
    runtime = local_lab.runtime()
    session = runtime.supervisor.recorded_pid()
    assert lab_processes(local_lab)  # the check below can see the lab's processes
    runtime.down()
    assert lab_processes(local_lab) == []
    assert session_processes(session) == []
    assert not runtime.is_up()
    assert {s.state for s in runtime.status() if s.name == "api"} == {"missing"}
    for runtime_setting in ("local", "auto"):  # auto: not "a Docker lab, all missing"
        down = run("status", env={"TRADELAB_HOME": str(local_lab.root),
                                  "TRADELAB_RUNTIME": runtime_setting})
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines()[0] == (
            "lab is down (it last ran on the local runtime): start it with `tradelab up`")

    local_lab.up("warm")
    again = requests.get(f"{local_lab.api}/trades/{trade['id']}", timeout=5)
    assert again.status_code == 200
    assert again.json()["client_order_id"] == trade["client_order_id"]
    assert again.json()["status"] == trade["status"]


def test_up_after_a_killed_supervisord_stops_its_orphans(local_lab):
    """Killed supervisord: its programs live on holding the ports; `up` must clear them
    (as `down` does) rather than report this lab's own ports as taken."""
    runtime = local_lab.runtime()
    session = runtime.supervisor.recorded_pid()
    os.kill(session, signal.SIGKILL)
    wait_for(lambda: not runtime.supervisor.running(), 30, "supervisord to die")
    assert session_processes(session)  # the orphans that hold the lab's ports
    local_lab.up("after a killed supervisord")
    assert session_processes(session) == []
    assert ready(local_lab.api)


def test_down_after_a_killed_supervisord_stops_its_orphans(local_lab):
    runtime = local_lab.runtime()
    session = runtime.supervisor.recorded_pid()
    os.kill(session, signal.SIGKILL)
    wait_for(lambda: not runtime.supervisor.running(), 30, "supervisord to die")
    assert session_processes(session)
    result = local_lab.cli("down")
    assert result.returncode == 0, result.stderr
    assert session_processes(session) == []
    assert lab_processes(local_lab) == []
    local_lab.up("after down of a killed supervisord")
    assert ready(local_lab.api)


def test_down_volumes_removes_what_it_says_and_says_what_it_removed(local_lab):
    root = local_lab.root
    ledger = root / "state" / "load" / "run-x" / "attempted.jsonl"
    if not ledger.parent.parent.is_dir():  # when no load ran before in this module
        ledger.parent.mkdir(parents=True)
        ledger.write_text("{}\n")
    outside = postgres_data_dir(local_lab.lab).resolve()
    result = local_lab.cli("down", "--volumes")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["lab is down (local runtime)", "removed the lab's data:"]
    removed = "\n".join(lines[2:])
    for path in (root / "data" / "postgres", root / "data" / "prometheus-data",
                 root / "state" / "logs", root / "state" / "load"):
        assert f"  {path}" in removed, (path, result.stdout)
        assert not path.exists() and not path.is_symlink(), path
    assert not (root / "data").exists()
    assert not outside.exists()
    assert (root / "tradelab.yaml").exists() and (root / "secrets").is_dir()  # not data

    again = local_lab.cli("down", "--volumes")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["no lab is running", "there was no data to remove"]


def test_lab_under_private_dir_keeps_cluster_outside(tmp_path):
    """A root-only parent (like /root) is not traversable by `postgres`: data moves out."""
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    lab = Lab(private / "lab")
    real = postgres_data_dir(lab)
    link = lab.data_dir / "postgres"
    assert not real.is_relative_to(private)
    assert not link.is_symlink() and not real.parent.exists()  # asking creates nothing
    try:
        assert postgres_data_dir(lab, create=True) == real
        assert link.is_symlink() and Path(os.readlink(link)) == real
        assert postgres_data_dir(lab) == real  # recorded: the same place next time
    finally:
        remove_postgres_data(lab)
    assert not link.is_symlink() and not real.parent.exists()


def test_bundled_server_under_private_dir_is_copied_where_postgres_can_run_it(tmp_path):
    """pgserver's binaries in root's 0700 home cannot be run by `postgres`: a copy can."""
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    from tradelab.db.cluster import find_bindir
    from tradelab.runtimes.local_postgres import server_bindir

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    install = private / "pginstall"
    shutil.copytree(find_bindir().parent, install, symlinks=True)
    copy = server_bindir(install / "bin", create=True)
    try:
        assert not copy.is_relative_to(private)
        result = subprocess.run([str(copy / "postgres"), "--version"], user="postgres",
                                capture_output=True, text=True, cwd="/")
        assert result.returncode == 0 and "PostgreSQL" in result.stdout, result.stderr
        assert server_bindir(install / "bin") == copy  # found again, not copied again
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def test_prometheus_reloads_a_rule_change_on_sighup_and_has_no_lifecycle_api(tmp_path):
    """No `--web.enable-lifecycle`: any local user or web page could POST /-/quit. A
    rule change (a setting the SLO rules read, then `up`) reaches the running
    Prometheus by SIGHUP through the driver: the same process, the new rules."""
    if not shutil.which("prometheus"):
        pytest.skip("no prometheus binary on PATH")
    root = tmp_path / "lab"
    ports = write_ports(root)
    lab = LocalLab(root)
    base = f"http://127.0.0.1:{ports['prometheus']}"

    def objective() -> str:
        """The availability objective's rule as the running Prometheus has loaded it."""
        groups = requests.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return next(r["query"] for g in groups for r in g["rules"]
                    if r["name"] == "tradelab:slo_objective"
                    and r["labels"].get("slo") == "availability")

    try:
        up(lab.settings, lab.lab, "local", only=["prometheus"], timeout=60,
           echo=lab.messages.append)
        pid = lab.pid("prometheus")
        assert objective() == "vector(0.999)"
        for path in ("/-/quit", "/-/reload"):
            assert requests.post(base + path, timeout=5).status_code in (403, 404), path
        assert lab.runtime().inspect("prometheus").state == "running"

        config = yaml.safe_load((root / "tradelab.yaml").read_text())
        config["slo"] = {"availability": 0.99}
        (root / "tradelab.yaml").write_text(yaml.safe_dump(config))
        changed = LocalLab(root)
        up(changed.settings, changed.lab, "local", only=["prometheus"], timeout=60,
           echo=changed.messages.append)
        assert any("reloading prometheus" in m for m in changed.messages), changed.messages
        wait_for(lambda: objective() == "vector(0.99)", 10, "the changed rule to be loaded")
        assert lab.pid("prometheus") == pid  # reloaded, not restarted
    finally:
        lab.runtime().down(volumes=True)
