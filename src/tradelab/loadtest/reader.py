# A reader: mostly reads its trades back and the index, placing an order now and then.
"""Run it alone:  locust -f reader.py --host http://127.0.0.1:8000 -u 20 -r 5 -t 1m

The read-heavy counterpart of trader.py: about one request in eleven writes. With a
profile:  locust -f reader.py,spike.py ReaderUser
"""

import random
from collections import deque

import _hooks  # noqa: F401 - run ids, order tallies and /metrics on the master's web UI
from _orders import place_order, read_trade
from locust import FastHttpUser, between, task


class ReaderUser(FastHttpUser):
    host = "http://127.0.0.1:8000"  # tradelab's default api port; --host overrides it
    wait_time = between(0.2, 1.0)
    connection_timeout = 5.0
    network_timeout = 30.0

    def on_start(self) -> None:
        self.trade_ids: deque[int] = deque(maxlen=50)
        self.place()  # something to read from the first task on

    @task(1)
    def place(self) -> None:
        trade_id = place_order(self)
        if trade_id is not None:
            self.trade_ids.append(trade_id)

    @task(7)
    def read_back(self) -> None:
        if self.trade_ids:
            read_trade(self, random.choice(self.trade_ids))

    @task(3)
    def index(self) -> None:
        self.client.get("/", name="/")
