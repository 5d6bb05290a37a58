"""Locust event hooks every tradelab scenario shares: run ids, order tallies, /metrics.

    import _hooks  # noqa: F401  (in a locustfile: importing registers the hooks)

- Options `--tradelab-run-id` (env TRADELAB_LOAD_RUN_ID) and `--tradelab-symbols`
  (env TRADELAB_SYMBOLS). Locust sends custom options from the master to its workers with
  every spawn, so a run id given to the master (on its command line, or in the /swarm form
  as `tradelab load` does) names the ledgers of all workers. Without one, or with one
  that is not a safe folder name (a `../` typed into the form), the master mints a
  fresh id for each test it starts. Each process closes a run's ledger when it stops.
- Workers add their order tallies to each stats report; the master sums them.
- `/metrics` on the master's web UI: Prometheus text format (see _metrics).
"""

from __future__ import annotations

import logging
import os

from _ledger import RUN_ID_ENV, is_safe_run_id, new_run_id
from _metrics import render
from _orders import COUNTERS, close_ledgers, retire_ledgers
from locust import events
from locust.runners import WorkerRunner


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--tradelab-run-id", default="", env_var=RUN_ID_ENV,
                        include_in_web_ui=False,
                        help="Names this run's order ledgers; minted per test when empty.")
    parser.add_argument("--tradelab-symbols", default="", env_var="TRADELAB_SYMBOLS",
                        help="Symbols to trade, e.g. AAPL,MSFT (default: tradelab's).")


@events.init.add_listener
def _metrics_route(environment, **_kwargs) -> None:
    if environment.web_ui is None:  # workers and headless runs have no web UI
        return

    @environment.web_ui.app.route("/metrics")
    def metrics():
        body, status, content_type = render(environment)
        return environment.web_ui.app.response_class(body, status=status,
                                                     content_type=content_type)


@events.test_start.add_listener
def _start(environment, **_kwargs) -> None:
    COUNTERS.clear()
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or options is None:
        return
    given = getattr(options, "tradelab_run_id", "")
    if given and not is_safe_run_id(given):
        logging.getLogger("tradelab.load").warning(
            "run id %r is not a safe folder name (letters, digits, '.', '_', '-'): "
            "using a fresh one", given)
        given = ""
    if not given:
        options.tradelab_run_id = new_run_id()


@events.test_stop.add_listener
def _stop(environment, **_kwargs) -> None:
    # Each ledger closes once its orders still in flight are through (their answers
    # come after the stop); a long-lived Locust process keeps no file per past run.
    retire_ledgers()
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or options is None:
        return
    # An id given per run (the /swarm form) must not leak into the next run started
    # from the web UI; one fixed for the whole process (the environment) stays.
    if getattr(options, "tradelab_run_id", "") != os.environ.get(RUN_ID_ENV, ""):
        options.tradelab_run_id = ""


@events.request.add_listener
def _count_response(request_type, name, response=None, **_kwargs) -> None:
    COUNTERS.response(request_type, name, getattr(response, "status_code", 0) or 0)


@events.report_to_master.add_listener
def _report(client_id, data, **_kwargs) -> None:
    data["tradelab"] = COUNTERS.take()


@events.worker_report.add_listener
def _collect(client_id, data, **_kwargs) -> None:
    COUNTERS.add(data.get("tradelab", {}))


@events.quitting.add_listener
def _quit(environment, **_kwargs) -> None:
    close_ledgers()
