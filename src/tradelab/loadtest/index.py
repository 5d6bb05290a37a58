# The original project's load: GET / as fast as each user can, no think time.
"""Run it:  locust -f index.py --host http://127.0.0.1:8000 -u 64 -r 64 -t 30s --headless

A throughput probe, not a trading scenario: it measures what the load generator and
the api's cheapest route can do (bench/load_vs_wrk.py compares it with wrk).
`tradelab load --user-type index` runs it.
"""

import _hooks  # noqa: F401 - run ids, tallies and /metrics on the master's web UI
from locust import FastHttpUser, constant, task


class IndexUser(FastHttpUser):
    host = "http://127.0.0.1:8000"  # tradelab's default api port; --host overrides it
    wait_time = constant(0)

    @task
    def index(self) -> None:
        self.client.get("/", name="/")
