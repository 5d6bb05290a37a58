"""Grafana, Loki, Promtail and Alloy configs, checked statically (none can run here).

    pytest tests/test_dashboards.py

Dashboards: a valid Grafana JSON model, unique panel ids, every datasource uid
provisioned, the panels the issue asks for. Logs: the labels the promtail/alloy
pipelines produce, and LogQL queries that use no other label. Their PromQL is run
against a real Prometheus in tests/test_observability_e2e.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tradelab.lab import Lab
from tradelab.render import render
from tradelab.settings import Settings

LOG_LABELS = {"service", "level", "event"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(Settings(), Lab(tmp_path_factory.mktemp("lab")), out)
    return out


@pytest.fixture(scope="module")
def dashboards(rendered) -> dict[str, dict]:
    folder = rendered / "grafana" / "dashboards"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


@pytest.fixture(scope="module")
def datasources(rendered) -> dict[str, dict]:
    path = rendered / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    return {d["uid"]: d for d in yaml.safe_load(path.read_text())["datasources"]}


def _targets(board: dict):
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel, target, target.get("datasource") or panel.get("datasource")


def test_four_dashboards_with_unique_uids(dashboards):
    titles = {b["title"] for b in dashboards.values()}
    assert titles == {"Trading overview", "Trading operations", "Logs", "Load test"}
    assert len({b["uid"] for b in dashboards.values()}) == 4


@pytest.mark.parametrize("name", ["trading-overview", "trading-operations", "logs", "load-test"])
def test_dashboard_model_is_valid(dashboards, datasources, name):
    board = dashboards[name]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for p, target, ds in _targets({"panels": [panel]}):
            assert ds["uid"] in datasources, (p["title"], ds)
            assert ds["type"] == datasources[ds["uid"]]["type"], p["title"]
            assert target["expr"].strip() and target["refId"]
    for note in board["annotations"]["list"]:
        uid = note["datasource"]["uid"]
        assert uid == "-- Grafana --" or uid in datasources
    for link in board.get("links", []):
        assert link["url"].removeprefix("/d/") in {b["uid"] for b in dashboards.values()}


def test_datasources_have_fixed_uids(datasources):
    assert {"prometheus", "loki", "alertmanager"} <= set(datasources)
    assert datasources["prometheus"]["isDefault"] is True
    assert datasources["alertmanager"]["jsonData"]["implementation"] == "prometheus"


def test_trading_overview_has_every_panel_the_issue_asks_for(dashboards):
    board = dashboards["trading-overview"]
    exprs = " ".join(t["expr"] for _, t, _ in _targets(board))
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for needle in ("tradelab_orders_received_total", "histogram_quantile(0.5",
                   "histogram_quantile(0.95", "histogram_quantile(0.99",
                   "tradelab_trades_processed_total", "tradelab_order_backlog",
                   "tradelab_oldest_pending_order_age_seconds", "tradelab:slo_objective",
                   "tradelab:slo_error_ratio:rate1h", "tradelab_chaos_active", "ALERTS"):
        assert needle in exprs, needle
    for needle in ("order rate", "error ratio", "latency", "outcome", "backlog",
                   "error budget remaining", "burn rate", "chaos", "firing alerts"):
        assert needle in titles, needle
    notes = [n for n in board["annotations"]["list"] if n.get("name") == "Chaos"]
    assert notes and "tradelab_chaos_active" in notes[0]["expr"]


def test_trading_operations_has_every_panel_the_issue_asks_for(dashboards):
    board = dashboards["trading-operations"]
    by_title = {p["title"]: " ".join(t["expr"] for t in p.get("targets", []))
                for p in board["panels"]}
    wanted = {  # panel -> the series it must show, by the labels an operator slices on
        "Orders by venue": "sum by (venue) (rate(tradelab_venue_orders_total",
        "Orders by venue and status": "sum by (venue, status) (rate(tradelab_venue_orders_total",
        "Venue failure ratio": 'tradelab_venue_orders_total{status="FAILED"}',
        "Routing table": "tradelab_route",
        "Market data age": "max by (venue, symbol) (tradelab_market_data_age_seconds)",
        "Risk rejections by reason": "sum by (reason) (rate(tradelab_risk_rejections_total",
        "Trading halts": "max by (symbol) (tradelab_trading_halted)",
        "Operator actions": "sum by (command) (increase(tradelab_operator_actions_total",
        "Net position by symbol (shares)": "sum by (symbol) (tradelab_position_shares)",
        "Net notional by symbol and venue": "tradelab_position_notional",
    }
    for title, needle in wanted.items():
        assert needle in by_title.get(title, ""), title
    overview_links = {link["url"] for link in dashboards["trading-overview"]["links"]}
    assert "/d/tradelab-ops" in overview_links


def test_every_panel_a_runbook_names_is_on_a_dashboard(dashboards):
    """Runbooks send a person to "Panel *X*" (or "panels *X* and *Y*"): X must exist."""
    titles = {p["title"] for b in dashboards.values() for p in b["panels"]}
    text = (Path(__file__).parents[1] / "docs" / "runbooks.md").read_text()
    named = set()
    for match in re.finditer(r"[Pp]anels? (\*[^*]+\*(?:(?:,| and) \*[^*]+\*)*)", text):
        named |= set(re.findall(r"\*([^*]+)\*", match.group(1)))
    assert len(named) >= 10
    assert not named - titles, f"runbooks name panels no dashboard has: {named - titles}"


def test_load_test_dashboard_uses_the_locustfile_metrics(dashboards):
    exported = set(re.findall(r'"(locust_\w+|tradelab_load_\w+)"', (
        Path(__file__).parents[1] / "src" / "tradelab" / "loadtest" / "_metrics.py").read_text()))
    exprs = " ".join(t["expr"] for _, t, _ in _targets(dashboards["load-test"]))
    used = set(re.findall(r"\b(locust_\w+|tradelab_load_\w+)", exprs))
    assert {"locust_users", "locust_requests_total", "locust_failures_total",
            "locust_response_time_seconds"} <= used
    assert {u.removesuffix("_total") for u in used} <= exported


def _produced_labels(promtail: dict) -> set[str]:
    """Labels the promtail pipeline leaves on a stream (labels stages minus labeldrop)."""
    labels: set[str] = set()
    for config in promtail["scrape_configs"]:
        for static in config.get("static_configs", []):
            labels |= {k for k in static.get("labels", {}) if not k.startswith("__")}
        labels.add("filename")  # promtail adds it to every file target
        for stage in config["pipeline_stages"]:
            if "labels" in stage:
                labels |= set(stage["labels"])
            if "labeldrop" in stage:
                labels -= set(stage["labeldrop"])
    return labels


def test_promtail_pipeline_labels_only_service_level_event(rendered):
    promtail = yaml.safe_load((rendered / "promtail" / "promtail.yml").read_text())
    assert _produced_labels(promtail) == LOG_LABELS
    stages = promtail["scrape_configs"][0]["pipeline_stages"]
    timestamps = [s["timestamp"]["source"] for s in stages if "timestamp" in s]
    assert timestamps[-1] == "ts"  # the app's own time wins over Docker's
    extracted = {k for s in stages if "json" in s for k in s["json"]["expressions"]}
    assert "trade_id" not in extracted  # trade ids stay in the line
    text = (rendered / "promtail" / "promtail.yml").read_text()
    assert "docker.sock" not in text and "docker_sd_configs" not in text


def test_alloy_pipeline_matches_promtail(tmp_path):
    out = tmp_path / "out"
    render(Settings(log_agent="alloy"), Lab(tmp_path / "lab"), out)
    text = (out / "alloy" / "config.alloy").read_text()
    assert not (out / "promtail").exists()
    labels = set()
    for block in re.findall(r"stage\.labels \{\s*values = \{([^}]*)\}", text):
        labels |= set(re.findall(r"(\w+)\s*=", block))
    dropped = set(re.findall(r'"(\w+)"', re.search(r"stage\.label_drop \{[^}]*\}", text)[0]))
    assert labels - dropped == LOG_LABELS
    assert 'source = "ts"' in text and "docker.sock" not in text
    assert text.count("{") == text.count("}")


def _logql_selector_labels(selector: str) -> set[str]:
    """Label names of a stream selector such as {service=~"api|engine", level="error"}."""
    inner = re.fullmatch(r"\{(.*)\}", selector.strip())
    assert inner, f"not a stream selector: {selector}"
    return set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", inner.group(1)))


def test_logql_queries_use_only_labels_the_pipeline_produces(dashboards):
    queries = [t["expr"] for b in dashboards.values() for _, t, ds in _targets(b)
               if ds["uid"] == "loki"]
    assert len(queries) >= 3
    for expr in queries:
        # the stream selector is everything before the first pipe outside braces
        selector = expr[: expr.index("}") + 1] if "}" in expr else expr
        selector = selector[selector.index("{"):]
        used = _logql_selector_labels(selector)
        assert used and used <= LOG_LABELS, expr
    assert _logql_selector_labels('{container="api", level=~"a|b"}') == {"container", "level"}


def test_logs_dashboard_filters_by_trade_id_next_to_the_error_rate(dashboards):
    board = dashboards["logs"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["trade_id"]["type"] == "textbox"
    by_ds = {}
    for panel, target, ds in _targets(board):
        by_ds.setdefault(ds["uid"], []).append((panel, target))
    assert any("$trade_id" in t["expr"] for _, t in by_ds["loki"])
    assert any("5.." in t["expr"] for _, t in by_ds["prometheus"])
    errors = [p for p, t in by_ds["loki"] if "level=~" in t["expr"] and p["type"] == "logs"]
    assert errors


def test_loki_config_is_single_process_filesystem(rendered):
    loki = yaml.safe_load((rendered / "loki" / "loki.yml").read_text())
    assert loki["auth_enabled"] is False
    assert loki["schema_config"]["configs"][0]["store"] == "tsdb"


def test_grafana_admin_password_only_through_a_file_and_anonymous_off(tmp_path):
    from tradelab.stack import build_stack

    grafana = build_stack(Settings(), Lab(tmp_path / "lab"), "docker").services["grafana"]
    env = grafana.environment
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
