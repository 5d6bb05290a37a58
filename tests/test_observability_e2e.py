"""The rendered observability config against the real thing: Prometheus and Alertmanager
(Debian's binaries) scraping a real api (gunicorn) and engine on a real PostgreSQL, with
Locust load, then `tradelab chaos on`.

    pytest tests/test_observability_e2e.py -s      # -s prints the measured times

Rendered exactly as `tradelab render --runtime local` would (targets 127.0.0.1:ports),
with ONE change to make it fast: prometheus.yml's scrape and evaluation intervals are
1s instead of 15s. The rule files are the rendered ones, untouched: same expressions,
same windows, same thresholds. Asserts:
- every recording rule and every PromQL expression of every dashboard panel (Grafana
  variables substituted: $__rate_interval -> 1m) returns data;
- `tradelab chaos on` (exchange-errors at 0.6) makes TradeProcessingBurnRateHigh fire
  in Prometheus and reach Alertmanager, where `tradelab alerts` finds it with its
  runbook link and when it will clear;
- every query `tradelab watch` runs returns data, and its frame shows the climb (the
  failure ratio, the burn rate over the page's windows, the firing page); Ctrl-C ends it.
The engine's baseline failure rate is 0 here, so that "no page before chaos" cannot
flake: in a lab a minute old, three unlucky baseline failures would page (docs/slo.md).
Grafana and Loki cannot run on this machine; their configs are checked statically
in tests/test_dashboards.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="prometheus binary not on PATH (Debian package `prometheus`)"),
]

# TRADELAB_E2E_REAL_INTERVALS=1 keeps the rendered 15s intervals (about a minute longer).
FAST = os.environ.get("TRADELAB_E2E_REAL_INTERVALS", "") != "1"
DASHBOARDS = Path(__file__).parents[1] / "src" / "tradelab" / "templates" / "grafana" / "dashboards"
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__auto": "1m", "$__range": "5m"}


def _get(url: str, timeout: float = 3.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response) if "json" in response.headers.get("Content-Type", "") \
            else response.read()


def _wait(what: str, check, timeout: float = 60.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last failure
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _query(prom: str, expr: str) -> list:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = _get(url)
    assert body["status"] == "success", body
    return body["data"]["result"]


class Processes:
    def __init__(self, logs: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs = logs

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-1500:]
                         for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
def running_stack(db, lab_dir, tmp_path):
    """api, engine, Locust (master + worker), Alertmanager and Prometheus, all running."""
    from tradelab.lab import Lab
    from tradelab.render import render
    from tradelab.settings import load_settings
    from tradelab.stack import build_stack

    ports = {k: free_port() for k in ("api", "engine", "prometheus", "alertmanager", "locust")}
    env = {**os.environ, "TRADELAB_HOME": str(lab_dir), "TRADELAB_DATABASE_URL": db.app_url,
           "TRADELAB_ENGINE__ORDER_RATE": "10", "TRADELAB_ENGINE__BASELINE_FAILURE_RATE": "0",
           "TRADELAB_API__WORKERS": "2"}
    env.update({f"TRADELAB_PORTS__{k.upper()}": str(v) for k, v in ports.items()})
    labdir = Lab(lab_dir).ensure()
    settings = load_settings(labdir, env=env)
    stack = build_stack(settings, labdir, "local").subset(
        ["api", "engine", "prometheus", "alertmanager", "locust-master"])
    render(settings, labdir, runtime="local", stack=stack)
    config = stack.rendered_dir / "prometheus" / "prometheus.yml"
    text = config.read_text()
    assert "scrape_interval: 15s" in text and "evaluation_interval: 15s" in text
    if FAST:
        config.write_text(text.replace("scrape_interval: 15s", "scrape_interval: 1s")
                          .replace("evaluation_interval: 15s", "evaluation_interval: 1s"))
    for name in ("prometheus-data", "alertmanager-data"):
        (labdir.data_dir / name).mkdir(parents=True, exist_ok=True)

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    tradelab = [sys.executable, "-m", "tradelab"]
    api = f"http://127.0.0.1:{ports['api']}"
    locustfile = str(Path(__file__).parents[1] / "src" / "tradelab" / "loadtest" / "trader.py")
    master_port = free_port()
    try:
        procs.start("api", [*tradelab, "serve", "api", "--bind", f"127.0.0.1:{ports['api']}"],
                    env)
        procs.start("engine", [*tradelab, "serve", "engine", "--metrics-bind",
                               f"127.0.0.1:{ports['engine']}"], env)
        for name in ("alertmanager", "prometheus"):
            argv = list(stack.services[name].argv)
            argv[0] = _binary(argv[0])
            procs.start(name, argv, env)
        if shutil.which("locust"):
            procs.start("locust-master", [
                "locust", "-f", locustfile, "--master", "--host", api, "--autostart",
                "-u", "4", "-r", "4", "--web-host", "127.0.0.1", "--web-port", str(ports["locust"]),
                "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)], env)
            procs.start("locust-worker", [
                "locust", "-f", locustfile, "--worker", "--master-host", "127.0.0.1",
                "--master-port", str(master_port)], env)
        prom = f"http://127.0.0.1:{ports['prometheus']}"
        _wait("api ready", lambda: _get(f"{api}/readyz"), timeout=60)
        _wait("prometheus ready", lambda: _get(f"{prom}/-/ready"), timeout=30)
        yield {"settings": settings, "prom": prom, "env": env, "procs": procs, "api": api,
               "locust": shutil.which("locust") is not None}
    except BaseException:
        print(procs.tail())
        raise
    finally:
        procs.stop()


def _binary(name: str) -> str:
    """Debian calls Alertmanager prometheus-alertmanager."""
    found = shutil.which(name) or shutil.which(f"prometheus-{name}")
    if found is None:
        pytest.skip(f"{name} binary not on PATH (Debian package `prometheus-{name}`)")
    return found


def _dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) for every Prometheus query of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("uid") == "prometheus":
                    found.append((path.stem, panel["title"], target["expr"]))
        for note in board["annotations"]["list"]:
            if note.get("datasource", {}).get("uid") == "prometheus":
                found.append((path.stem, f"annotation {note['name']}", note["expr"]))
    return found


def _substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


def _recorded_series(rules_dir: Path) -> list[str]:
    import yaml

    out = []
    for path in sorted(rules_dir.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    labels = ",".join(f'{k}="{v}"' for k, v in rule.get("labels", {}).items())
                    out.append(f"{rule['record']}{{{labels}}}")
    return out


def test_chaos_pages_and_every_query_returns_data(running_stack, capsys):
    from tradelab.alerts import firing_alerts

    prom, settings = running_stack["prom"], running_stack["settings"]
    _wait("api and engine scraped", lambda: {r["metric"]["job"] for r in _query(
        prom, "up == 1")} >= {"api", "engine", "alertmanager", "prometheus"}, timeout=60)
    _wait("orders flowing and SLIs recorded", lambda: len(_query(
        prom, "tradelab:slo_error_ratio:rate5m >= 0")) == 3, timeout=90)
    assert _query(prom, 'ALERTS{alertstate="firing",severity="page"}') == []
    for board, title, expr in _dashboard_exprs():  # valid PromQL, even where empty for now
        try:
            _query(prom, _substitute(expr))
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{board}: {title}: {exc.read().decode()}")

    # tradelab chaos on: the default fault, exchange-errors at 0.6
    result = subprocess.run([sys.executable, "-m", "tradelab", "chaos", "on"],
                            env=running_stack["env"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    chaos_on = time.monotonic()
    page = 'ALERTS{alertname="TradeProcessingBurnRateHigh",alertstate="firing",severity="page"}'
    _wait("the page to fire in Prometheus", lambda: _query(prom, page), timeout=120)
    fired_s = time.monotonic() - chaos_on
    am = _wait("the page in Alertmanager", lambda: [
        a for a in firing_alerts(settings) if a["alertname"] == "TradeProcessingBurnRateHigh"],
        timeout=60)
    in_am_s = time.monotonic() - chaos_on
    assert am[0]["severity"] == "page" and am[0]["labels"]["slo"] == "processing_success"
    assert am[0]["runbook_url"].endswith("/docs/runbooks.md#tradeprocessingburnratehigh")
    with capsys.disabled():
        print(f"\nchaos on -> page firing in Prometheus: {fired_s:.1f}s; in Alertmanager: "
              f"{in_am_s:.1f}s (scrape and evaluation every {'1s' if FAST else '15s'})")

    cli = subprocess.run([sys.executable, "-m", "tradelab", "alerts", "--json"],
                         env=running_stack["env"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert "TradeProcessingBurnRateHigh" in {a["alertname"] for a in json.loads(cli.stdout)}
    _watch_and_alerts_explain_the_page(running_stack)
    chaos_panel = _query(prom, 'max by (fault) (tradelab_chaos_active{fault="exchange-errors"})')
    assert chaos_panel and chaos_panel[0]["value"][1] == "1"

    # Every recording rule and every dashboard query returns data now.
    home = Path(running_stack["env"]["TRADELAB_HOME"])
    rules_dir = home / "rendered" / "local" / "prometheus" / "rules"
    empty = [s for s in _recorded_series(rules_dir) if not _query(prom, s)]
    assert not empty, f"recording rules without data: {empty}"
    queries = [q for q in _dashboard_exprs() if q[0] != "load-test" or running_stack["locust"]]

    def without_data():  # a few need a moment more (Locust's first stats, a rate window)
        return [q for q in queries if not _query(prom, _substitute(q[2]))]

    missing = without_data()
    deadline = time.monotonic() + 30
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = without_data()
    assert not missing, "dashboard queries without data:\n" + "\n".join(map(str, missing))
    _operations_panels_show_the_levers(running_stack)
    if not running_stack["locust"]:
        pytest.skip("locust not on PATH: the Load test dashboard's queries were not run")



def _operations_panels_show_the_levers(lab) -> None:
    """The Trading operations dashboard's own queries show a halt, a failover (the flow
    moving to the other venue) and the operator actions that did it."""
    board = json.loads((DASHBOARDS / "trading-operations.json").read_text())
    panel = {p["title"]: _substitute(p["targets"][0]["expr"])
             for p in board["panels"] if p.get("targets")}
    prom = lab["prom"]
    tradelab = [sys.executable, "-m", "tradelab"]
    for lever in (["ops", "halt", "--symbol", "AAPL"],
                  ["ops", "route", "--venue", "beta", "--symbol", "MSFT"]):
        done = subprocess.run([*tradelab, *lever], env=lab["env"], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def by(expr: str, *labels: str) -> dict[tuple, float]:
        return {tuple(r["metric"].get(k) for k in labels): float(r["value"][1])
                for r in _query(prom, expr)}

    _wait("the halt on the Trading halts panel", lambda: by(
        panel["Trading halts"], "symbol").get(("AAPL",)) == 1.0, timeout=30)
    assert by(panel["Trading halts"], "symbol")[("ALL",)] == 0.0
    _wait("MSFT routed to beta on the Routing table panel", lambda: by(
        panel["Routing table"], "symbol", "venue").get(("MSFT", "beta")) == 1.0, timeout=30)
    _wait("orders reaching beta on the Orders by venue panel", lambda: by(
        panel["Orders by venue"], "venue").get(("beta",), 0) > 0, timeout=30)
    actions = _wait("the levers on the Operator actions panel", lambda: (
        found := by(panel["Operator actions"], "command")).get(("ops route",), 0) > 0 and found,
        timeout=30)
    assert actions[("ops halt",)] > 0 and actions[("ops resume",)] == 0


def _watch_and_alerts_explain_the_page(lab) -> None:
    from tradelab.watch import SIGNALS, burn_queries

    prom = lab["prom"]
    needs_load = {"order_rate", "api_error_ratio", "p99_latency"}
    for sig in SIGNALS:
        if sig.key in needs_load and not lab["locust"]:
            continue
        rows = _wait(f"watch's {sig.key} query to return data",
                     lambda expr=sig.expr: _query(prom, expr), timeout=30)
        assert len(rows) == 1, (sig.key, rows)
    for window, expr in burn_queries().items():
        rows = _query(prom, expr)
        assert {r["metric"]["slo"] for r in rows} == {
            "availability", "latency", "processing_success"}, (window, rows)

    tradelab = [sys.executable, "-m", "tradelab"]
    cli = subprocess.run([*tradelab, "watch", "--once", "--json"], env=lab["env"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    frame = json.loads(cli.stdout)
    # The last minute still holds healthy trades from before `chaos on` (baseline 0).
    assert frame["signals"]["trade_failure_ratio"]["value"] > 0.1
    assert frame["burn"]["processing_success"]["5m"]["burn"] > 14.4
    assert frame["burn"]["processing_success"]["5m"]["fires_at"] == 14.4
    assert {"severity": "page", "alertname": "TradeProcessingBurnRateHigh",
            "slo": "processing_success"} in frame["alerts"]
    text = subprocess.run([*tradelab, "watch", "--once"], env=lab["env"],
                          capture_output=True, text=True, timeout=30)
    assert text.returncode == 0, text.stderr
    assert "trades that ended FAILED" in text.stdout
    assert "TradeProcessingBurnRateHigh" in text.stdout

    explained = subprocess.run([*tradelab, "alerts", "--json"], env=lab["env"],
                               capture_output=True, text=True, timeout=30)
    assert explained.returncode == 0, explained.stderr
    page = next(a for a in json.loads(explained.stdout)
                if a["alertname"] == "TradeProcessingBurnRateHigh")
    assert page["clears"]["measured"] and page["clears"]["waits_on"] == "5m"
    assert 0 < page["clears"]["after_fault_s"] <= 300

    live = subprocess.Popen([*tradelab, "watch", "--interval", "1"], env=lab["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    live.send_signal(signal.SIGINT)
    out, err = live.communicate(timeout=15)
    assert live.returncode == 0, err
    assert "golden signals" in out and "Traceback" not in err
