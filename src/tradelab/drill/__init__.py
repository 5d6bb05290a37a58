"""Drills: the lab picks and hides an incident; a person (or a program) responds to it.

    from tradelab.drill import play
    play.start(settings, lab, seed=7, level=2)     # plans, starts load, spawns the watcher
    play.ack(lab); play.diagnose(lab, "db-outage")
    play.status(settings, lab)                     # elapsed, firing alerts, never the answer
    play.end(settings, lab)                        # early stop; scorecard + postmortem

plan: the seeded pick. session: a drill's files under <lab>/state/drills/<id>/.
watch: the detached process that injects, watches and sees mitigation. report: the
scorecard and the postmortem draft. play: the commands.
"""
