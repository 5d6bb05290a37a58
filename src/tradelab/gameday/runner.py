"""Run one game day with chaostoolkit-lib, measure it, write its journal and report.

    result = run_gameday(settings, lab, "db-outage", GameDayOptions(fault_for_s=30),
                         echo=print)
    result.ok              # hypothesis held before and after, detected, recovered, nothing lost
    result.directory       # <lab>/state/gamedays/<UTC time>-db-outage/
    result.journal["time_to_detect_s"], result.journal["time_to_recover_s"]

journal.json is Chaos Toolkit's journal plus: time_to_detect_s, time_to_recover_s,
alerts_seen, steady_state_before/after (probe results and SLI values), reconciliation,
load, and "tradelab" (scenario, fault, timeline, Prometheus series for the charts), so
`tradelab gameday report DIR` can draw the report again without the lab.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradelab.gameday.timeline import Timeline

# Options a person sets from the command line; they override the experiment's configuration.
OPTION_KEYS = ("warmup_s", "fault_for_s", "detect_timeout_s", "recover_timeout_s", "users")


@dataclass
class GameDayOptions:
    warmup_s: float | None = None
    fault_for_s: float | None = None
    detect_timeout_s: float | None = None
    recover_timeout_s: float | None = None
    users: int | None = None

    def overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}


@dataclass
class GameDayResult:
    scenario: str
    directory: Path
    journal: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.journal.get("tradelab", {}).get("ok"))

    def as_dict(self) -> dict[str, Any]:
        j = self.journal
        return {"scenario": self.scenario, "ok": self.ok, "directory": str(self.directory),
                "status": j.get("status"), "deviated": j.get("deviated"),
                "expected_alert": j["tradelab"]["expected_alert"],
                "time_to_detect_s": j.get("time_to_detect_s"),
                "time_to_recover_s": j.get("time_to_recover_s"),
                "alerts_seen": j.get("alerts_seen"),
                "reconciliation": {k: (j.get("reconciliation") or {}).get(k)
                                   for k in ("ok", "method", "counts", "summary")},
                "failures": j["tradelab"]["failures"],
                "report": str(self.directory / "report.html")}


def run_gameday(settings, lab, scenario: str, options: GameDayOptions | None = None,
                echo: Callable[[str], None] | None = None) -> GameDayResult:
    from chaoslib.experiment import run_experiment

    from tradelab.gameday.scenarios import load_scenario

    name, experiment = load_scenario(scenario)
    _check_runtime(settings, lab, experiment["configuration"]["fault"])
    options = options or GameDayOptions()
    lab.ensure()
    started = time.time()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = lab.state_dir / "gamedays" / f"{stamp}-{name}"
    directory.mkdir(parents=True, exist_ok=False)
    config_vars = {"tradelab_lab_dir": str(lab.root), **options.overrides()}
    timeline = Timeline.of(lab)
    timeline.reset(runner=True, scenario=name)
    handler = _events(config_vars)
    with _echo_logs(echo, started):
        journal = run_experiment(
            experiment,
            settings={"runtime": {"rollbacks": {"strategy": "always"}}},
            experiment_vars=(config_vars, {}),
            event_handlers=[handler],
        )
    journal = extend_journal(settings, journal, timeline.read(), handler, name, started)
    write_json(directory / "journal.json", journal)
    from tradelab.gameday.report import write_report

    write_report(directory)
    return GameDayResult(name, directory, journal)


def _check_runtime(settings, lab, fault: str) -> None:
    """A fault the running lab's runtime cannot carry out is refused before any load."""
    from tradelab.errors import TradelabError
    from tradelab.faults import check_fault, check_runtime
    from tradelab.orchestrator import running_driver

    try:
        kind = running_driver(settings, lab).kind
    except TradelabError:
        return  # no lab: the steady-state probes say so, in the journal
    check_runtime(check_fault(fault), kind)


def extend_journal(settings, journal: dict[str, Any], timeline: dict[str, Any], handler,
                   name: str, started: float) -> dict[str, Any]:
    """Chaos Toolkit's journal plus what tradelab measured (see the module docstring)."""
    config = dict(journal.get("experiment", {}).get("configuration", {}))
    fault, expected = config.get("fault"), config.get("expected_alert")
    alerts = sorted(timeline.get("alerts", {}).values(), key=lambda a: a["first_seen"])
    before, after = (journal.get("steady_states") or {}).get("before"), \
        (journal.get("steady_states") or {}).get("after")
    recon = journal.get("reconciliation") or timeline.get("reconciliation") or {}
    failures = []
    if not (before or {}).get("steady_state_met"):
        failures.append("the steady state did not hold before the fault")
    if timeline.get("time_to_detect_s") is None:
        failures.append(f"{expected} was not seen (time to detect: not measured)")
    if timeline.get("time_to_recover_s") is None:
        failures.append("the lab did not recover in time (time to recover: not measured)")
    if before and before.get("steady_state_met") and not (after or {}).get("steady_state_met"):
        failures.append("the steady state did not hold after the fault")
    if not recon.get("ok"):
        failures.append(f"reconciliation: {recon.get('summary', 'not done')}")
    if journal.get("status") not in ("completed",):
        failures.append(f"Chaos Toolkit status: {journal.get('status')}")
    series = fetch_series(settings, timeline, started)
    journal.update({
        "time_to_detect_s": timeline.get("time_to_detect_s"),
        "time_to_recover_s": timeline.get("time_to_recover_s"),
        "alerts_seen": [{**a, "first_seen": _iso(a["first_seen"]),
                         "last_seen": _iso(a.get("last_seen")),
                         "resolved_seen": _iso(a.get("resolved_seen")),
                         "expected": a["alertname"] == expected} for a in alerts],
        "steady_state_before": {"met": (before or {}).get("steady_state_met"),
                                "slis": handler.slis.get("before")},
        "steady_state_after": {"met": (after or {}).get("steady_state_met"),
                               "slis": handler.slis.get("after")},
        "reconciliation": recon,
        "tradelab": {
            "scenario": name, "fault": fault, "expected_alert": expected, "ok": not failures,
            "failures": failures,
            "window_scale": settings.slo.window_scale,
            "scrape_interval_s": settings.prometheus.scrape_interval_s,
            "timeline": {k: timeline.get(k) for k in
                         ("load_started_at", "injected_at", "detected_at", "removed_at",
                          "recovered_at", "load_stopped_at")},
            "series": series,
        },
    })
    return journal


# Charts of the report: title -> (y label, {legend: PromQL}); W is the short SLO window.
CHARTS = {
    "error_ratio": ("Error ratio (short SLO window)", "share of bad events", {
        "{slo}": "tradelab:slo_error_ratio:rate5m"}),
    "latency_p99": ("Latency p99", "seconds", {
        "POST /trades": 'histogram_quantile(0.99, sum by (le) (rate('
                        'tradelab_http_request_duration_seconds_bucket{method="POST",'
                        'route="/trades"}[W])))',
        "trade execution": 'histogram_quantile(0.99, sum by (le) (rate('
                           'tradelab_trade_processing_duration_seconds_bucket[W])))'}),
    "backlog": ("Order backlog", "orders in NEW / seconds", {
        "backlog (orders)": "max(tradelab_order_backlog)",
        "oldest pending (s)": "max(tradelab_oldest_pending_order_age_seconds)"}),
}


def fetch_series(settings, timeline: dict[str, Any], started: float) -> dict[str, Any]:
    """Every chart's range queries over the game day, kept in the journal."""
    from tradelab.durations import prometheus_duration
    from tradelab.errors import TradelabError
    from tradelab.gameday.prometheus import query_range

    start = (timeline.get("load_started_at") or started) - 10
    end = time.time()
    step = max(1.0, settings.prometheus.scrape_interval_s, (end - start) / 600)
    window = prometheus_duration(max(300 * settings.slo.window_scale,
                                     4 * settings.prometheus.scrape_interval_s))
    out: dict[str, Any] = {}
    for chart, (_title, _unit, queries) in CHARTS.items():
        lines = []
        for legend, expr in queries.items():
            expr = expr.replace("[W]", f"[{window}]")
            try:
                rows = query_range(settings, expr, start, end, step)
            except TradelabError as exc:
                rows, legend = [], f"{legend} (unavailable: {exc})"
            for row in rows:
                label = legend.format(**{"slo": row["metric"].get("slo", "")})
                lines.append({"legend": label, "expr": expr, "values": row["values"]})
        out[chart] = lines
    return out


def _events(configuration: dict[str, Any]):
    """A Chaos Toolkit event handler that takes the SLI values at each steady-state check."""
    from chaoslib.run import RunEventHandler

    from tradelab.errors import TradelabError
    from tradelab.gameday.probes import sli_values

    class SliSnapshots(RunEventHandler):
        def __init__(self) -> None:
            self.slis: dict[str, Any] = {}

        def _take(self, when: str) -> None:
            try:
                self.slis[when] = sli_values(configuration)
            except TradelabError as exc:
                self.slis[when] = {"error": str(exc)}

        def hypothesis_before_completed(self, experiment, state, journal) -> None:
            self._take("before")

        def hypothesis_after_completed(self, experiment, state, journal) -> None:
            self._take("after")

    return SliSnapshots()


class _echo_logs:
    """Chaos Toolkit's and tradelab's step lines, with the elapsed time, to `echo`."""

    def __init__(self, echo: Callable[[str], None] | None, started: float) -> None:
        self.echo, self.started = echo, started
        self.logger = logging.getLogger("chaostoolkit")

    def __enter__(self):
        if self.echo is None:
            return self
        outer = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                elapsed = int(time.time() - outer.started)
                outer.echo(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {record.getMessage()}")

        self.handler = Handler(logging.INFO)
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        if self.echo is not None:
            self.logger.removeHandler(self.handler)
            self.logger.setLevel(self.level)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00",
                                                                                     "Z")
