"""`tradelab alerts` says when a firing SLO alert clears; promtool proves it on the real
rendered rules. The windows it names come from tradelab.slo_policy, which the rule
template renders: one home, so the explanation cannot drift from the rules.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from test_rules import (  # noqa: F401  (fixtures)
    MATURE,
    ORDER_RATE,
    SETTINGS,
    Check,
    Lab,
    _page,
    minutes,
    promtool_test,
    rendered,
    rule_files,
)

from tradelab import slo_policy


def test_a_page_clears_when_the_policy_says_after_the_fault_ends(rule_files, tmp_path):  # noqa: F811
    """exchange-errors (60% FAILED) for 15 minutes in a 3-hour-old lab, then off."""
    page = slo_policy.policy_for("page")
    ratio = 0.6
    at_end = {w: ratio for c in page.clauses for w in (c.long, c.short)}
    at_end["1h"] = ratio / 4  # 15 bad minutes in the hour; the other windows are full of it
    at_end["6h"] = ratio * 15 / 195  # the lab is 3h15m old
    bad_5m = ratio * ORDER_RATE * 300
    target = SETTINGS.slo.processing_success
    seconds, window = slo_policy.clears_after(page, at_end, bad_5m, target)
    assert window == "5m" and 240 < seconds < 300, (seconds, window)

    off = MATURE + minutes(15)
    alert = _page("TradeProcessingBurnRateHigh", "processing_success")
    only = alert["alertname"]
    checks = [Check(off, [alert], only=only),
              Check(off + seconds - 60, [alert], only=only),
              Check(off + seconds + 60, [], only=only)]
    promtool_test(rule_files, Lab(faults={"exchange-errors": (MATURE, off)}),
                  off + seconds + 75, checks, tmp_path)


def test_the_rules_are_rendered_from_the_policy(tmp_path, monkeypatch):
    from tradelab.lab import Lab as LabDir
    from tradelab.render import render

    slower = dataclasses.replace(slo_policy.BURN_ALERTS[0],
                                 clauses=(slo_policy.BurnClause(10, "2h", "10m"),))
    monkeypatch.setattr(slo_policy, "BURN_ALERTS", (slower, *slo_policy.BURN_ALERTS[1:]))
    monkeypatch.setattr(slo_policy, "WINDOWS", (*slo_policy.WINDOWS, "10m", "2h"))
    render(SETTINGS, LabDir(tmp_path / "lab"), tmp_path / "out")
    rules = yaml.safe_load((tmp_path / "out" / "prometheus" / "rules" / "slo.yml").read_text())
    page = next(r for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "TradeProcessingBurnRateHigh")
    assert 'rate2h{slo="processing_success"} > (10 * (1 - 0.999))' in page["expr"]
    assert "rate6h" not in page["expr"] and "14.4" not in page["expr"]


@pytest.mark.parametrize("severity,window,most", [("page", "5m", 300), ("ticket", "6h", 21600)])
def test_without_prometheus_the_longest_wait_is_said(severity, window, most):
    import math

    policy = slo_policy.policy_for(severity)
    ratios = {w: math.inf for c in policy.clauses for w in (c.long, c.short)}
    assert slo_policy.clears_after(policy, ratios, math.inf, 0.999) == (most, window)
    # With the rule windows scaled (slo.window_scale, as game days and tests run), the
    # wait is scaled too: a 5m window that really lasts 30s clears within 30s.
    assert slo_policy.clears_after(policy, ratios, math.inf, 0.999, scale=0.1) \
        == (most * 0.1, window)
