"""A Chaos Toolkit control: warm-up load around the whole experiment, then reconciliation.

    "controls": [{"name": "tradelab",
                  "provider": {"type": "python", "module": "tradelab.gameday.control"}}]

The steady-state hypothesis needs traffic to measure SLIs, before the method and after
it, so the load starts before the first probe (before_experiment_control) and stops
after the last one (after_experiment_control), which then reconciles the load's
ledger against the database. The journal gets the result under "reconciliation".
"""

from __future__ import annotations

from typing import Any

from tradelab.gameday.context import lab_of, log, number
from tradelab.gameday.timeline import Timeline


def before_experiment_control(context: dict, configuration: dict[str, Any] | None = None,
                              **kwargs: Any) -> None:
    from tradelab.gameday import actions

    _settings, lab = lab_of(configuration)
    timeline = Timeline.of(lab)
    if not timeline.read().get("runner"):  # `chaos run`: nobody reset it for us
        timeline.reset(scenario=(configuration or {}).get("fault"))
    log.info(f"warming up for {number(configuration, 'warmup_s'):g}s before the "
             "steady-state check")
    actions.start_load(configuration)


def after_experiment_control(context: dict, state: dict | None = None,
                             configuration: dict[str, Any] | None = None,
                             **kwargs: Any) -> None:
    from tradelab.gameday import actions

    load = actions.stop_load(configuration)
    result = actions.reconcile(configuration)
    if isinstance(state, dict):  # the journal: plain `chaos run` keeps these too
        state["load"] = load
        state["reconciliation"] = result
