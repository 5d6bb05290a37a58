"""Game days: scripted incidents, measured, as Chaos Toolkit experiments.

    tradelab gameday list
    tradelab gameday run db-outage --warmup 30s --fault-for 60s
    chaos run src/tradelab/gameday/experiments/db-outage.json     # the same, by Chaos Toolkit

    from tradelab.gameday.runner import GameDayOptions, run_gameday
    result = run_gameday(settings, lab, "db-outage", GameDayOptions(fault_for_s=30))
    result.ok, result.directory                   # journal.json, report.md, report.html

A scenario is a Chaos Toolkit experiment (experiments/*.json, one per catalogued fault):
a steady-state hypothesis (probes), a method (actions) and rollbacks, all Python
providers in tradelab.gameday.probes / .actions, plus a control (tradelab.gameday.control)
that keeps warm-up load on for the whole run and reconciles at the end. The lab and the
timings come in through the experiment's `configuration`.
"""
