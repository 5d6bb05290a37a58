# A trader: places orders with unique client_order_ids, retries 503s, reads its trades back.
"""Run it alone:  locust -f trader.py --host http://127.0.0.1:8000 -u 20 -r 5 -t 1m

A 503 is retried after its Retry-After with the same client_order_id, and an order
counts as acknowledged only on 201 (or 200, a replay of that key). GET /error fails
on purpose: its 500 is the expected answer, so it is reported as a success.
The shapes in steady.py, spike.py and market_open.py run this user with a profile.
"""

import random
from collections import deque

import _hooks  # noqa: F401 - run ids, order tallies and /metrics on the master's web UI
from _orders import place_order, read_trade
from locust import FastHttpUser, between, task


class TraderUser(FastHttpUser):
    host = "http://127.0.0.1:8000"  # tradelab's default api port; --host overrides it
    wait_time = between(0.2, 1.0)
    connection_timeout = 5.0
    network_timeout = 30.0

    def on_start(self) -> None:
        self.trade_ids: deque[int] = deque(maxlen=50)

    @task(6)
    def place(self) -> None:
        trade_id = place_order(self)
        if trade_id is not None:
            self.trade_ids.append(trade_id)

    @task(3)
    def read_back(self) -> None:
        if self.trade_ids:
            read_trade(self, random.choice(self.trade_ids))

    @task(2)
    def index(self) -> None:
        self.client.get("/", name="/")

    @task(1)
    def expected_error(self) -> None:
        with self.client.get("/error", name="/error", catch_response=True) as resp:
            if resp.status_code == 500:
                resp.success()
            else:
                resp.failure(f"expected the deliberate 500, got {resp.status_code}")
