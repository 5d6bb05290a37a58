"""The rendered alerting rules, proven with `promtool test rules` on synthetic but realistic series.

    pytest tests/test_rules.py

Each scenario is a small model of the lab (rates per second of the series the api
and engine export) run for hours at the rendered scrape and evaluation interval
(15s), with a fault switched on and off. promtool evaluates the REAL rendered rule
files over it; the test asserts, through the `ALERTS` series, that the alert for
the fault fires within the time documented in docs/runbooks.md, that a healthy lab
fires nothing, and that the alert resolves after recovery. Also `promtool check
rules`, `promtool check config` and `amtool check-config` on the rendered files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tradelab.settings import Settings

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool not on PATH (Debian package `prometheus`)")

SETTINGS = Settings()
THRESHOLD = SETTINGS.slo.latency_threshold_s
ORDER_RATE = SETTINGS.engine.order_rate  # orders/s of the engine's background flow
BASELINE_FAILURE = SETTINGS.engine.baseline_failure_rate
API_RATE = 10.0  # POST /trades per second from a modest `tradelab load`
JOBS = ("api", "engine", "prometheus", "alertmanager", "locust-master")


def minutes(m: float) -> float:
    return m * 60


def hours(h: float) -> float:
    return h * 3600


# -- a model of the lab ---------------------------------------------------------------

@dataclass
class Lab:
    """What the lab exports at time t (seconds), healthy unless a fault says otherwise."""

    faults: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (on, off)
    failure_rate: Callable[[float], float] | None = None  # override of the engine's
    api_error_ratio: Callable[[float], float] | None = None
    slow_ratio: Callable[[float], float] | None = None  # share of POST /trades > threshold

    def on(self, fault: str, t: float) -> bool:
        start, end = self.faults.get(fault, (float("inf"), 0))
        return start <= t < end

    def since(self, fault: str, t: float) -> float:
        return t - self.faults[fault][0]

    def db_down(self, t: float) -> bool:
        return self.on("db-outage", t) or self.on("db-pause", t)

    def engine_working(self, t: float) -> bool:
        return not (self.db_down(t) or self.on("engine-stall", t) or self.on("kill-engine", t)
                    or self.on("db-hang", t))

    # counters: rates per second ------------------------------------------------------
    def processed(self, status: str, t: float) -> float:
        if not self.engine_working(t):
            return 0.0
        failed = self.failure_rate(t) if self.failure_rate else BASELINE_FAILURE
        if self.on("exchange-errors", t):
            failed = 0.6
        rejected = 0.05 * (1 - failed)
        share = {"FAILED": failed, "REJECTED": rejected, "FILLED": 1 - failed - rejected}
        return ORDER_RATE * share[status]

    def http(self, code: str, t: float) -> float:
        if self.on("kill-api", t):
            return 0.0
        if self.db_down(t):
            return {"503": API_RATE}.get(code, 0.0)
        bad = 0.6 if self.on("api-errors", t) else (
            self.api_error_ratio(t) if self.api_error_ratio else 0.0)
        return {"201": API_RATE * (1 - bad) * 0.98, "400": API_RATE * (1 - bad) * 0.02,
                "500": API_RATE * bad}.get(code, 0.0)

    def answered(self, t: float) -> float:
        return sum(self.http(c, t) for c in ("201", "400", "500", "503"))

    def fast(self, t: float) -> float:
        """POST /trades per second answered within the latency threshold."""
        slow = 1.0 if self.on("api-latency", t) else (
            self.slow_ratio(t) if self.slow_ratio else 0.002)
        return self.answered(t) * (1 - slow)

    def processing_within(self, le: float, t: float) -> float:
        done = sum(self.processed(s, t) for s in ("FILLED", "REJECTED", "FAILED"))
        took = 0.85 if self.on("exchange-latency", t) else 0.04
        return done if took <= le else 0.0

    # gauges -------------------------------------------------------------------------
    def oldest_pending_age(self, t: float) -> float:
        for fault in ("db-outage", "engine-stall", "db-hang"):
            if self.on(fault, t):
                return self.since(fault, t)
        return 0.4

    def last_batch(self, t: float) -> float:
        for fault in ("db-outage", "engine-stall", "db-hang"):
            if self.on(fault, t):
                return self.faults[fault][0]
        return t

    def db_busy(self, t: float) -> float:
        """The engine's current database work: milliseconds, or (db-hang: a call the
        server never answers and no bound ends) ever longer; db_up stays 1 meanwhile."""
        return self.since("db-hang", t) if self.on("db-hang", t) else 0.02

    def up(self, job: str, t: float) -> float:
        return 0.0 if self.on(f"kill-{job}", t) or self.on(f"down-{job}", t) else 1.0


def series(lab: Lab, duration: float, step: float) -> list[dict[str, str]]:
    """promtool input_series for `lab` over `duration` seconds, one sample per `step`."""
    times = [i * step for i in range(int(duration // step) + 1)]
    le = _go_float(THRESHOLD)
    counters: dict[str, Callable[[float], float]] = {
        f'tradelab_trades_processed_total{{job="engine",instance="engine:9101",status="{s}"}}':
            (lambda t, s=s: lab.processed(s, t)) for s in ("FILLED", "REJECTED", "FAILED")
    }
    for code in ("201", "400", "500", "503"):
        counters[f'tradelab_http_requests_total{{job="api",instance="api:8000",method="POST",'
                 f'route="/trades",code="{code}"}}'] = lambda t, c=code: lab.http(c, t)
    hist = 'tradelab_http_request_duration_seconds_{}{{job="api",instance="api:8000",' \
           'method="POST",route="/trades"{}}}'
    counters[hist.format("bucket", f',le="{le}"')] = lab.fast
    counters[hist.format("bucket", ',le="+Inf"')] = lab.answered
    counters[hist.format("count", "")] = lab.answered
    for ple in (0.05, 0.5, 1.0, float("inf")):
        name = ('tradelab_trade_processing_duration_seconds_bucket{job="engine",'
                f'instance="engine:9101",le="{_go_float(ple)}"}}')
        counters[name] = lambda t, x=ple: lab.processing_within(x, t)
    gauges: dict[str, Callable[[float], float]] = {
        'tradelab_oldest_pending_order_age_seconds{job="engine",instance="engine:9101"}':
            lab.oldest_pending_age,
        'tradelab_engine_last_batch_timestamp_seconds{job="engine",instance="engine:9101"}':
            lab.last_batch,
        'tradelab_engine_db_busy_seconds{job="engine",instance="engine:9101"}': lab.db_busy,
        'tradelab_db_up{job="api",instance="api:8000"}': lambda t: 0.0 if lab.db_down(t) else 1,
        'tradelab_db_pool_size{job="api",instance="api:8000"}': lambda t: 8.0,
        'tradelab_db_pool_available{job="api",instance="api:8000"}':
            lambda t: 0.0 if lab.on("pool-exhaustion", t) else 7.0,
        'tradelab_db_up{job="engine",instance="engine:9101"}':
            lambda t: 0.0 if lab.db_down(t) else 1,
    }
    for job in JOBS:
        gauges[f'up{{job="{job}",instance="{job}:1"}}'] = lambda t, j=job: lab.up(j, t)

    out = []
    for name, rate in counters.items():
        total, values = 0.0, []
        for t in times:
            values.append(total)
            total += rate(t) * step
        out.append({"series": name, "values": " ".join(_num(v) for v in values)})
    for name, value in gauges.items():
        out.append({"series": name, "values": " ".join(_num(value(t)) for t in times)})
    return out


def _num(v: float) -> str:
    return f"{v:.6g}" if abs(v) < 1e6 else f"{v:.10g}"


def _go_float(x: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(x)


# -- promtool --------------------------------------------------------------------------

def alert(name: str, severity: str, **labels: str) -> dict:
    return {"alertname": name, "severity": severity, **labels}


@dataclass
class Check:
    at: float  # seconds
    firing: list[dict]  # exactly these are firing (an empty list: nothing)
    only: str | None = None  # restrict the check to one alertname
    severity: str | None = None  # restrict the check to one severity


def promtool_test(rule_files: list[Path], lab: Lab, duration: float, checks: list[Check],
                  tmp: Path, step: float = 15) -> None:
    test = {
        "rule_files": [str(p) for p in rule_files],
        "evaluation_interval": f"{int(step)}s",
        "tests": [{
            "interval": f"{int(step)}s",
            "input_series": series(lab, duration, step),
            "promql_expr_test": [_expr_test(c) for c in checks],
        }],
    }
    path = tmp / "test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _expr_test(check: Check) -> dict:
    selector = 'alertstate="firing"' + (f',alertname="{check.only}"' if check.only else "")
    selector += f',severity="{check.severity}"' if check.severity else ""
    samples = []
    for a in check.firing:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted({**a, "alertstate": "firing"}.items()))
        samples.append({"labels": f"ALERTS{{{labels}}}", "value": 1})
    return {"expr": f"ALERTS{{{selector}}}", "eval_time": f"{int(check.at)}s",
            "exp_samples": samples}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The lab's configuration as `tradelab render` writes it, with default settings."""
    from tradelab.lab import Lab as LabDir
    from tradelab.render import render

    out = tmp_path_factory.mktemp("rendered")
    lab = LabDir(tmp_path_factory.mktemp("lab"))
    render(SETTINGS, lab, out)
    return out


@pytest.fixture(scope="module")
def rule_files(rendered) -> list[Path]:
    files = sorted((rendered / "prometheus" / "rules").glob("*.yml"))
    assert [f.name for f in files] == ["resources.yml", "slo.yml", "symptoms.yml"]
    return files


def all_alerts(rule_files: list[Path]) -> list[dict]:
    return [rule for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]
            for rule in g["rules"] if "alert" in rule]


# -- static checks ---------------------------------------------------------------------

def test_promtool_check_rules(rule_files):
    result = subprocess.run(["promtool", "check", "rules", *map(str, rule_files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_loads_the_rules(rendered, rule_files):
    config = rendered / "prometheus" / "prometheus.yml"
    result = subprocess.run(["promtool", "check", "config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.findall(r"SUCCESS: (\d+) rules found", result.stdout)
    assert sum(map(int, found)) == sum(
        len(g["rules"]) for f in rule_files for g in yaml.safe_load(f.read_text())["groups"])


def test_every_alert_has_severity_annotations_and_a_runbook_section(rule_files):
    runbooks = (Path(__file__).parents[1] / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbooks, re.M)}
    from tradelab.runbooks import base_url, section

    base = base_url(SETTINGS)
    for rule in all_alerts(rule_files):
        assert section(rule["alert"]).startswith(f"## {rule['alert']}\n")  # `tradelab runbook`
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url == base and anchor in anchors, (rule["alert"], notes["runbook_url"])
        assert anchor == rule["alert"].lower()


def test_burn_rate_alerts_have_no_for_clause(rule_files):
    burn = [r for r in all_alerts(rule_files) if "Burn" in r["alert"]]
    assert len(burn) == 6
    assert all("for" not in r for r in burn)


def test_latency_sli_uses_the_bucket_at_exactly_the_threshold(rule_files):
    text = next(f for f in rule_files if f.name == "slo.yml").read_text()
    assert f'le="{_go_float(THRESHOLD)}"' in text
    from tradelab.app.api_metrics import latency_buckets

    assert THRESHOLD in latency_buckets(THRESHOLD)


@pytest.mark.parametrize("alerting", [
    {}, {"webhook_url": "http://127.0.0.1:9/hook"},
    {"slack_webhook_url": "https://hooks.slack.com/services/T0/B0/x", "slack_channel": "#sre"},
])
def test_alertmanager_config_is_valid(tmp_path, alerting):
    if shutil.which("amtool") is None:
        pytest.skip("amtool not on PATH (Debian package `prometheus-alertmanager`)")
    from tradelab.lab import Lab as LabDir
    from tradelab.render import render

    render(Settings(alerting=alerting), LabDir(tmp_path / "lab"), tmp_path / "out")
    path = tmp_path / "out" / "alertmanager" / "alertmanager.yml"
    checked = path
    if "webhook_url" in alerting:
        # Debian's amtool (0.25) predates webhook url_file, which the pinned image (0.28)
        # reads: check the same config with the URL inline, as that version would need it.
        checked = tmp_path / "as-0.25.yml"
        checked.write_text(path.read_text().replace(
            'url_file: "/run/secrets/alert_webhook_url"', f"url: {alerting['webhook_url']}"))
    result = subprocess.run(["amtool", "check-config", str(checked)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    routes = {r["matchers"][0]: r["receiver"] for r in config["route"]["routes"]}
    receivers = {r["name"]: r for r in config["receivers"]}
    if not alerting:  # nowhere to deliver: everything ends in `discard`
        assert set(routes.values()) == {"discard"} and list(receivers) == ["discard"]
        return
    assert routes == {'severity="page"': "page", 'severity="ticket"': "ticket"}
    page = receivers["page"]
    if "webhook_url" in alerting:  # a credential too (it may carry a token)
        assert page["webhook_configs"][0]["url_file"] == "/run/secrets/alert_webhook_url"
        secret = tmp_path / "lab" / "secrets" / "alert_webhook_url"
        assert secret.read_text().strip() == alerting["webhook_url"]
        assert secret.stat().st_mode & 0o777 == 0o600
        assert alerting["webhook_url"] not in path.read_text()
    else:  # the webhook URL is a credential: read from a 0600 lab secret, never inline
        secret = tmp_path / "lab" / "secrets" / "slack_webhook_url"
        assert secret.read_text().strip() == alerting["slack_webhook_url"]
        assert secret.stat().st_mode & 0o777 == 0o600
        assert page["slack_configs"][0]["api_url_file"] == "/run/secrets/slack_webhook_url"
        assert page["slack_configs"][0]["channel"] == "#sre"
        rendered = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
        assert alerting["slack_webhook_url"] not in rendered


# -- scenarios ------------------------------------------------------------------------

HEALTHY_H = 1.25  # the lab has run healthy for 75 minutes when the fault starts
T0 = hours(HEALTHY_H)
# Healthy for 3 hours: old enough that the 1h/5m condition decides when a page fires
# (the 6h/30m one needs 0.6 min of 60% failures per hour of history, up to 6h).
MATURE = hours(3)
TS = minutes(20)  # symptom alerts look back minutes, not hours


def _page(name: str, slo: str) -> dict:
    return alert(name, "page", slo=slo)


def test_healthy_lab_fires_nothing(rule_files, tmp_path):
    checks = [Check(minutes(m), []) for m in (5, 30, 60, 119, 180, 240)]
    promtool_test(rule_files, Lab(), hours(4), checks, tmp_path)


def test_an_unlucky_hour_does_not_page(rule_files, tmp_path):
    """Ten times the baseline failures, 0.05% 5xx and 1% slow requests for an hour: no
    page (it may well be worth a ticket)."""
    bad = (hours(1), hours(2))
    lab = Lab(failure_rate=lambda t: BASELINE_FAILURE * (10 if bad[0] <= t < bad[1] else 1),
              api_error_ratio=lambda t: 0.0005 if bad[0] <= t < bad[1] else 0.0,
              slow_ratio=lambda t: 0.01 if bad[0] <= t < bad[1] else 0.002)
    checks = [Check(minutes(m), [], severity="page") for m in range(60, 180, 10)]
    promtool_test(rule_files, lab, hours(3), checks, tmp_path)


@pytest.mark.parametrize("fault,alertname,slo,quiet_s,page_s", [
    ("exchange-errors", "TradeProcessingBurnRateHigh", "processing_success", 60, 120),
    ("api-errors", "OrderAcceptanceBurnRateHigh", "availability", 60, 120),
    ("api-latency", "ApiLatencyBurnRateHigh", "latency", 480, 600),
])
def test_fault_pages_in_time_and_resolves(rule_files, tmp_path, fault, alertname, slo,
                                          quiet_s, page_s):
    """In a lab healthy for 3 hours (as slow to page as any older lab: the 1h window
    is full of good traffic) the 1h/5m page fires when the 1h error ratio reaches 14.4x the budget:
    after 14.4 * budget * 1h / error ratio of the fault (docs/slo.md): ~86s for 60%
    failures against a 0.1% budget, ~8.5 min for all requests slow against a 1% budget.
    Not before (`quiet_s`), by `page_s`. After 15 minutes of fault the 6h/30m condition
    holds the page until the 30m window has forgotten the fault; then it resolves."""
    t0 = MATURE
    off = t0 + minutes(15)
    lab = Lab(faults={fault: (t0, off)})
    page = _page(alertname, slo)
    checks = [
        Check(t0 - 15, [], only=alertname),
        Check(t0 + quiet_s, [], only=alertname),
        Check(t0 + page_s, [page], only=alertname),
        Check(off, [page], only=alertname),
        Check(off + minutes(35), [], only=alertname),
    ]
    promtool_test(rule_files, lab, off + minutes(36), checks, tmp_path)


def test_two_failures_among_a_new_labs_first_trades_do_not_page(rule_files, tmp_path):
    """Two FAILED trades among the first 90 are 2.2%, over 14.4x a 0.1% budget in every
    window a lab that young has; the page also wants 3 bad events in 5 minutes."""
    lab = Lab(failure_rate=lambda t: 1 / 30 if 15 <= t < 45 else 0.0)
    checks = [Check(s, [], severity="page") for s in (30, 45, 60, 120, 240)]
    promtool_test(rule_files, lab, 180, checks, tmp_path)


def test_young_lab_pages_even_sooner(rule_files, tmp_path):
    """Healthy for only 75 minutes: the 6h window holds 75 minutes, so the 6x/30m
    condition is reached first (60% failures: ~1 minute)."""
    lab = Lab(faults={"exchange-errors": (T0, T0 + minutes(10))})
    page = _page("TradeProcessingBurnRateHigh", "processing_success")
    checks = [Check(T0 - 15, []), Check(T0 + minutes(1) + 15, [page], only=page["alertname"])]
    promtool_test(rule_files, lab, T0 + minutes(2), checks, tmp_path)


def test_slow_burn_tickets_and_does_not_page(rule_files, tmp_path):
    """Four times the error budget of every SLO for 7 hours after 12 healthy ones: a
    ticket each (3d and 6h over 1x), no page (6x is not reached); resolved 6h after
    recovery. One-minute samples: the ticket windows are hours long."""
    start, end = hours(12), hours(19)
    slo = SETTINGS.slo

    def burn(target: float, healthy: float):
        return lambda t: 4 * (1 - target) if start <= t < end else healthy

    lab = Lab(failure_rate=burn(slo.processing_success, BASELINE_FAILURE),
              api_error_ratio=burn(slo.availability, 0.0), slow_ratio=burn(slo.latency, 0.002))
    tickets = [alert(f"{name}BudgetBurn", "ticket", slo=key) for name, key in (
        ("ApiLatency", "latency"), ("OrderAcceptance", "availability"),
        ("TradeProcessing", "processing_success"))]
    checks = [
        Check(hours(11), []),
        Check(start + hours(1), [], severity="page"),
        Check(end - minutes(1), tickets),
        Check(end + hours(6) + minutes(5), []),
    ]
    promtool_test(rule_files, lab, end + hours(6) + minutes(6), checks, tmp_path, step=60)


def test_stale_backlog_and_engine_not_processing_page_on_engine_stall(rule_files, tmp_path):
    off = TS + minutes(10)
    lab = Lab(faults={"engine-stall": (TS, off)})
    stale = alert("OrderBacklogStale", "page")
    stuck = alert("EngineNotProcessing", "page")
    checks = [
        Check(TS + minutes(1), []),
        Check(TS + minutes(2), [stale]),  # 30s old + 1m for:
        Check(TS + minutes(3), [stale, stuck]),  # 60s without a poll + 1m for:
        Check(off + minutes(2), []),
    ]
    promtool_test(rule_files, lab, off + minutes(5), checks, tmp_path)


@pytest.mark.parametrize("fault", ["db-outage", "db-pause"])
def test_database_down_pages_and_resolves(rule_files, tmp_path, fault):
    off = TS + minutes(5)
    lab = Lab(faults={fault: (TS, off)})
    checks = [
        Check(TS - 15, [], only="DatabaseDown"),
        Check(TS + minutes(1), [alert("DatabaseDown", "page", job="api"),
                                alert("DatabaseDown", "page", job="engine")],
              only="DatabaseDown"),
        Check(TS + minutes(2), [_page("OrderAcceptanceBurnRateHigh", "availability")],
              only="OrderAcceptanceBurnRateHigh"),
        Check(off + minutes(1), [], only="DatabaseDown"),
    ]
    promtool_test(rule_files, lab, off + minutes(3), checks, tmp_path)


def test_an_engine_hung_on_the_database_pages_before_it_looks_stalled(rule_files, tmp_path):
    """A database call nothing ends (the engine's bounds failed): db_up still says 1, so
    DatabaseDown stays quiet; the wait itself pages, and sooner than EngineNotProcessing."""
    off = TS + minutes(5)
    lab = Lab(faults={"db-hang": (TS, off)})
    hung = alert("EngineDatabaseWaitStuck", "page")
    checks = [
        Check(TS + 30, [], only="EngineDatabaseWaitStuck"),
        Check(TS + minutes(1), [hung], only="EngineDatabaseWaitStuck"),
        Check(TS + minutes(1), [], only="EngineNotProcessing"),
        Check(TS + minutes(1), [], only="DatabaseDown"),
        Check(off + 30, [], only="EngineDatabaseWaitStuck"),
    ]
    promtool_test(rule_files, lab, off + minutes(2), checks, tmp_path)


def test_killed_service_pages_as_target_down(rule_files, tmp_path):
    off = TS + minutes(5)
    lab = Lab(faults={"kill-api": (TS, off), "kill-engine": (TS, off)})
    down = [alert("ScrapeTargetDown", "page", job=j, instance=f"{j}:1") for j in ("api", "engine")]
    checks = [
        Check(TS + minutes(2), down, only="ScrapeTargetDown"),
        Check(off + minutes(1), [], only="ScrapeTargetDown"),
    ]
    promtool_test(rule_files, lab, off + minutes(3), checks, tmp_path)


def test_monitoring_target_down_is_a_ticket_and_load_generator_is_ignored(rule_files, tmp_path):
    off = TS + minutes(10)
    lab = Lab(faults={"down-alertmanager": (TS, off), "down-locust-master": (TS, off)})
    checks = [
        Check(TS + minutes(3), []),
        Check(TS + minutes(6), [alert("ScrapeTargetDown", "ticket", job="alertmanager",
                                      instance="alertmanager:1")]),
        Check(off + minutes(1), []),
    ]
    promtool_test(rule_files, lab, off + minutes(3), checks, tmp_path)


def test_exchange_latency_tickets_as_slow_processing(rule_files, tmp_path):
    off = TS + minutes(10)
    lab = Lab(faults={"exchange-latency": (TS, off)})
    slow = alert("TradeProcessingSlow", "ticket")
    checks = [
        Check(TS + minutes(1), []),
        Check(TS + minutes(4), [slow]),
        Check(off + minutes(8), []),
    ]
    promtool_test(rule_files, lab, off + minutes(10), checks, tmp_path)


@pytest.mark.parametrize("scale", [0.1, 0.02])
def test_scaled_rule_windows_are_valid_and_shrunk(tmp_path, scale):
    """slo.window_scale shrinks every window and `for:`; promtool still accepts the rules."""
    from tradelab.lab import Lab as LabDir
    from tradelab.render import render
    from tradelab.settings import load_settings

    settings = load_settings(None, env={}, flags={"slo.window_scale": scale,
                                                  "prometheus.scrape_interval_s": 1,
                                                  "prometheus.evaluation_interval_s": 1})
    out = tmp_path / "out"
    render(settings, LabDir(tmp_path / "lab"), out, runtime="local")
    files = sorted((out / "prometheus" / "rules").glob("*.yml"))
    result = subprocess.run(["promtool", "check", "rules", *map(str, files)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = "".join(f.read_text() for f in files)
    short = f"[{round(300 * scale)}s]"
    assert short in text and "[5m]" not in text and "for: 1m" not in text
    assert "scrape_interval: 1s" in (out / "prometheus" / "prometheus.yml").read_text()


def test_a_window_scale_too_small_for_the_scrape_interval_is_refused():
    from tradelab.errors import TradelabError
    from tradelab.settings import load_settings

    with pytest.raises(TradelabError, match="less than two scrapes"):
        load_settings(None, env={}, flags={"slo.window_scale": 0.05})


def test_pool_exhaustion_pages_as_database_pool_exhausted(rule_files, tmp_path):
    off = TS + minutes(10)
    lab = Lab(faults={"pool-exhaustion": (TS, off)})
    page = alert("DatabasePoolExhausted", "page", job="api")
    checks = [
        Check(TS - 15, [], only="DatabasePoolExhausted"),
        Check(TS + 30, [], only="DatabasePoolExhausted"),
        Check(TS + minutes(2), [page], only="DatabasePoolExhausted"),
        Check(off + minutes(1), [], only="DatabasePoolExhausted"),
    ]
    promtool_test(rule_files, lab, off + minutes(2), checks, tmp_path)


# -- trading operations: venues, market data, risk, halts -------------------------------

def _trading_series(duration: float, step: float, fault: str, on: float, off: float,
                    routed_to: str = "alpha"):
    """The engine's trading series over time: 2 orders/s split over two venues, fresh
    market data, AAPL routed to `routed_to`, no halt, a few risk rejections; `fault`
    changes one of them in [on, off)."""
    times = [i * step for i in range(int(duration // step) + 1)]
    engine = 'job="engine",instance="engine:9101"'

    def within(t):
        return on <= t < off

    def venue_rate(venue, status):
        def rate(t):
            total = 1.0  # orders/s per venue
            failed = 0.9 if fault == "venue" and venue == "alpha" and within(t) else 0.0005
            return total * (failed if status == "FAILED" else 1 - failed)
        return rate

    def risk_rate(t):
        return 3.0 if fault == "risk" and within(t) else 0.05

    counters = {f'tradelab_venue_orders_total{{{engine},venue="{v}",status="{s}"}}':
                venue_rate(v, s) for v in ("alpha", "beta") for s in ("FILLED", "FAILED")}
    counters[f'tradelab_risk_rejections_total{{{engine},reason="PRICE_BAND"}}'] = risk_rate
    counters[f'tradelab_trades_processed_total{{{engine},status="FILLED"}}'] = lambda t: 2.0
    counters[f'tradelab_trades_processed_total{{{engine},status="REJECTED"}}'] = risk_rate
    gauges = {
        f'tradelab_market_data_age_seconds{{{engine},venue="{v}",symbol="AAPL"}}':
            (lambda t, v=v: (t - on) if fault == "stale" and v == "alpha" and within(t)
             else 0.25) for v in ("alpha", "beta")}
    gauges[f'tradelab_trading_halted{{{engine},symbol="ALL"}}'] = \
        lambda t: 1.0 if fault == "halt" and within(t) else 0.0
    for v in ("alpha", "beta"):
        gauges[f'tradelab_route{{{engine},symbol="AAPL",venue="{v}"}}'] = \
            lambda t, v=v: 1.0 if v == routed_to else 0.0
    out = []
    for name, rate in counters.items():
        total, values = 0.0, []
        for t in times:
            values.append(total)
            total += rate(t) * step
        out.append({"series": name, "values": " ".join(_num(v) for v in values)})
    for name, value in gauges.items():
        out.append({"series": name, "values": " ".join(_num(value(t)) for t in times)})
    return out


@pytest.mark.parametrize("fault, alertname, severity, labels, fires_within", [
    ("venue", "VenueFailing", "page", {"venue": "alpha"}, minutes(5)),
    ("stale", "MarketDataStale", "page", {"venue": "alpha"}, minutes(2)),
    ("risk", "RiskRejectionsSpiking", "ticket", {}, minutes(11)),
    ("halt", "TradingHalted", "ticket", {"symbol": "ALL"}, minutes(6)),
])
def test_trading_alerts_fire_for_their_fault_only_and_resolve(rule_files, tmp_path, fault,
                                                              alertname, severity, labels,
                                                              fires_within):
    on, off, duration, step = minutes(10), minutes(40), minutes(60), 15
    test = {
        "rule_files": [str(p) for p in rule_files],
        "evaluation_interval": f"{step}s",
        "tests": [{"interval": f"{step}s",
                   "input_series": _trading_series(duration, step, fault, on, off),
                   "promql_expr_test": [
                       _expr_test(Check(on - step, [], severity=None, only=alertname)),
                       _expr_test(Check(on + fires_within,
                                        [alert(alertname, severity, **labels)],
                                        only=alertname)),
                       # nothing else of the trading group fires for this fault
                       _expr_test(Check(on + fires_within, [alert(alertname, severity,
                                                                  **labels)])),
                       _expr_test(Check(off + minutes(12), [], only=alertname)),
                   ]}],
    }
    path = tmp_path / "trading.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stale_market_data_of_a_venue_nothing_is_routed_to_does_not_page(rule_files, tmp_path):
    """After `ops route --venue beta`, alpha's feed may stay stale: no order sees it, so
    MarketDataStale must not page (the failover is the mitigation)."""
    on, off, duration, step = minutes(10), minutes(40), minutes(60), 15
    test = {
        "rule_files": [str(p) for p in rule_files],
        "evaluation_interval": f"{step}s",
        "tests": [{"interval": f"{step}s",
                   "input_series": _trading_series(duration, step, "stale", on, off,
                                                   routed_to="beta"),
                   "promql_expr_test": [
                       _expr_test(Check(on + minutes(5), [], only="MarketDataStale")),
                       _expr_test(Check(on + minutes(20), [], only="MarketDataStale")),
                   ]}],
    }
    path = tmp_path / "unrouted.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# -- resources: crash-restarts, CPU, memory (tradelab_process_*) -------------------------

MiB = 2**20


def _process_series(duration: float, step: float, restarts: dict[str, float],
                    cpu: dict[str, Callable[[float], float]],
                    resident: dict[str, Callable[[float], float]]) -> list[dict[str, str]]:
    """The api's and engine's tradelab_process_* series: `restarts` job -> the time its
    process started again (no scrape missed: supervisord was quicker), `cpu` job -> its
    threads running or waiting for a CPU at t (CPU time: as much, at most two cores),
    `resident` job -> bytes held at t; both services always scraped (up 1)."""
    times = [i * step for i in range(int(duration // step) + 1)]
    limits = {"api": SETTINGS.memory_limit_bytes("api"),
              "engine": SETTINGS.memory_limit_bytes("engine")}
    out = []
    for job in ("api", "engine"):
        labels = f'job="{job}",instance="{job}:1"'
        started = restarts.get(job)
        out.append({"series": f"tradelab_process_start_time_seconds{{{labels}}}",
                    "values": " ".join(_num(1.7e9 + (started if started is not None
                                                     and t >= started else -600))
                                       for t in times)})
        total, values = 0.0, []
        for t in times:
            if started is not None and abs(t - started) < step / 2:
                total = 0.0  # a new process counts its CPU from zero
            values.append(total)
            total += min(2.0, cpu[job](t)) * step
        out.append({"series": f"tradelab_process_cpu_seconds_total{{{labels}}}",
                    "values": " ".join(_num(v) for v in values)})
        out.append({"series": f"tradelab_process_runnable_threads{{{labels}}}",
                    "values": " ".join(_num(cpu[job](t)) for t in times)})
        out.append({"series": f"tradelab_process_resident_memory_bytes{{{labels}}}",
                    "values": " ".join(_num(resident[job](t)) for t in times)})
        out.append({"series": f"tradelab_process_memory_limit_bytes{{{labels}}}",
                    "values": " ".join(_num(limits[job]) for _ in times)})
        out.append({"series": f"up{{{labels}}}", "values": " ".join("1" for _ in times)})
    return out


def _resource_test(rule_files, tmp_path, input_series, checks: list[Check]) -> None:
    test = {"rule_files": [str(p) for p in rule_files], "evaluation_interval": "15s",
            "tests": [{"interval": "15s", "input_series": input_series,
                       "promql_expr_test": [_expr_test(c) for c in checks]}]}
    path = tmp_path / "resources.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


HEALTHY_CPU = {"api": lambda t: 0.3, "engine": lambda t: 0.05}
HEALTHY_RESIDENT = {"api": lambda t: 230 * MiB, "engine": lambda t: 70 * MiB}


def test_a_crash_restart_no_scrape_missed_tickets_as_service_restarted(rule_files, tmp_path):
    """kill-api / kill-engine on the local runtime: supervisord restarts the process
    between two scrapes, so `up` never drops and ScrapeTargetDown cannot fire; the new
    start time does. The ticket holds for 10 minutes after each restart."""
    at = TS
    restarted = [alert("ServiceRestarted", "ticket", job=j, instance=f"{j}:1")
                 for j in ("api", "engine")]
    checks = [
        Check(at - 15, [], only="ServiceRestarted"),
        Check(at + 15, restarted, only="ServiceRestarted"),
        Check(at + minutes(9), restarted, only="ServiceRestarted"),
        Check(at + minutes(2), [], only="ScrapeTargetDown"),
        Check(at + minutes(11), [], only="ServiceRestarted"),
    ]
    _resource_test(rule_files, tmp_path, _process_series(
        at + minutes(12), 15, {"api": at, "engine": at}, HEALTHY_CPU, HEALTHY_RESIDENT),
        checks)


def test_cpu_hog_in_the_engine_tickets_and_a_busy_api_does_not(rule_files, tmp_path):
    """The engine's two hog threads always run or wait for a CPU: ServiceCpuSaturated
    once the 5m average passes 3/4 of a thread and 2m more. The api with one thread
    runnable over two workers is busy, not saturated (0.75 per worker): no ticket for
    it. Resolved after the hog is gone."""
    on, off = TS, TS + minutes(15)
    cpu = {"api": lambda t: 1.0, "engine": lambda t: 2.05 if on <= t < off else 0.05}
    ticket = alert("ServiceCpuSaturated", "ticket", job="engine")
    checks = [
        Check(on - 15, [], only="ServiceCpuSaturated"),
        Check(on + minutes(1), [], only="ServiceCpuSaturated"),
        Check(on + minutes(5), [ticket], only="ServiceCpuSaturated"),
        Check(off, [ticket], only="ServiceCpuSaturated"),
        Check(off + minutes(6), [], only="ServiceCpuSaturated"),
    ]
    _resource_test(rule_files, tmp_path, _process_series(
        off + minutes(7), 15, {}, cpu, HEALTHY_RESIDENT), checks)


def test_memory_leak_in_the_api_tickets_before_the_limit_and_resolves(rule_files, tmp_path):
    """The api's workers leak 8 MiB/s from 230 MiB up to 90% of memory.api (512m):
    past 80% (~410 MiB, after ~23s) for 2 minutes, ServiceMemoryHigh; the engine's
    steady 70 MiB of 256 MiB never. Freed when the fault ends (or the api restarts)."""
    on, off = TS, TS + minutes(10)
    limit = SETTINGS.memory_limit_bytes("api")

    def api(t: float) -> float:
        return min(230 * MiB + 8 * MiB * (t - on), 0.9 * limit) if on <= t < off else 230 * MiB

    ticket = alert("ServiceMemoryHigh", "ticket", job="api")
    checks = [
        Check(on - 15, [], only="ServiceMemoryHigh"),
        Check(on + minutes(1), [], only="ServiceMemoryHigh"),
        Check(on + minutes(3), [ticket], only="ServiceMemoryHigh"),
        Check(off - 15, [ticket], only="ServiceMemoryHigh"),
        Check(off + 30, [], only="ServiceMemoryHigh"),
    ]
    _resource_test(rule_files, tmp_path, _process_series(
        off + minutes(2), 15, {}, HEALTHY_CPU, {**HEALTHY_RESIDENT, "api": api}), checks)


# -- lock contention, bad fills, retry storms, a venue that stops answering --------------

def _fault_series(duration: float, step: float, fault: str, on: float, off: float):
    """What the api and engine export around these faults: 10 POST /trades a second
    (new orders, a few 503 retries found committed), 2 fills a second on each venue;
    `fault` changes its part of them in [on, off)."""
    times = [i * step for i in range(int(duration // step) + 1)]
    api, engine = 'job="api",instance="api:8000"', 'job="engine",instance="engine:9101"'

    def within(t):
        return on <= t < off

    def posts(t):  # a retry storm sends every order 4 times
        return API_RATE * (4 if fault == "retry-storm" and within(t) else 1)

    def replays(t):
        return 3 * API_RATE if fault == "retry-storm" and within(t) else 0.01

    def lock_timeouts(t):  # every write waits out its 2s lock_timeout
        return API_RATE / 3 if fault == "db-lock-contention" and within(t) else 0.0

    def venue(name, status):
        def rate(t):
            down = fault == "exchange-down" and name == "alpha" and within(t)
            if status == "FAILED":
                return 10.0 if down else 0.001  # a batch of 20 timed out every 2s
            return 0.0 if down else 1.0
        return rate

    counters = {
        f'tradelab_http_requests_total{{{api},method="POST",route="/trades",code="201"}}':
            lambda t: API_RATE - lock_timeouts(t),
        f'tradelab_http_requests_total{{{api},method="POST",route="/trades",code="200"}}':
            replays,
        f'tradelab_http_requests_total{{{api},method="POST",route="/trades",code="503"}}':
            lock_timeouts,
        f"tradelab_idempotent_replays_total{{{api}}}": replays,
        f"tradelab_db_lock_timeouts_total{{{api}}}": lock_timeouts,
        f"tradelab_db_lock_timeouts_total{{{engine}}}":
            lambda t: 0.2 if fault == "db-lock-contention" and within(t) else 0.0,
        f'tradelab_fills_outside_limit_total{{{engine},venue="alpha"}}':
            lambda t: 0.5 if fault == "bad-fills" and within(t) else 0.0,
    }
    for name in ("alpha", "beta"):
        for status in ("FILLED", "FAILED"):
            counters[f'tradelab_venue_orders_total{{{engine},venue="{name}",'
                     f'status="{status}"}}'] = venue(name, status)
    out = []
    for name, rate in counters.items():
        total, values = 0.0, []
        for t in times:
            values.append(total)
            total += rate(t) * step
        out.append({"series": name, "values": " ".join(_num(v) for v in values)})
    return out


S4_ALERTS = ("DatabaseLockContention", "FillsOutsideLimit", "IdempotentReplaysHigh",
             "VenueFailing")


@pytest.mark.parametrize("fault, alertname, severity, labels, quiet_s, fires_within", [
    ("db-lock-contention", "DatabaseLockContention", "page", {}, 30, minutes(2)),
    ("bad-fills", "FillsOutsideLimit", "page", {}, 0, 30),
    ("retry-storm", "IdempotentReplaysHigh", "ticket", {}, minutes(3), minutes(4)),
    ("exchange-down", "VenueFailing", "page", {"venue": "alpha"}, 60, minutes(4)),
])
def test_each_fault_fires_its_own_alert_only_and_it_resolves(rule_files, tmp_path, fault,
                                                             alertname, severity, labels,
                                                             quiet_s, fires_within):
    """Quiet before the fault and for `quiet_s` into it (the alert's `for:`), firing by
    `fires_within`, none of the other three alerts meanwhile, resolved 12 minutes after
    the fault ends (its 5 minute window forgotten)."""
    on, off, duration, step = minutes(10), minutes(30), minutes(45), 15
    firing = [alert(alertname, severity, **labels)]
    checks = [Check(on - step, [], only=alertname), Check(on + fires_within, firing,
                                                          only=alertname),
              Check(off + minutes(12), [], only=alertname)]
    if quiet_s:
        checks.append(Check(on + quiet_s - step, [], only=alertname))
    checks += [Check(on + fires_within, [], only=other) for other in S4_ALERTS
               if other != alertname]
    test = {
        "rule_files": [str(p) for p in rule_files],
        "evaluation_interval": f"{step}s",
        "tests": [{"interval": f"{step}s",
                   "input_series": _fault_series(duration, step, fault, on, off),
                   "promql_expr_test": [_expr_test(c) for c in checks]}],
    }
    path = tmp_path / "faults.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
