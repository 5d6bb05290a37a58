# A trading day in -t: an opening-bell burst, a midday lull, a closing burst (peak: -u).
"""Run it:  locust -f market_open.py --host http://127.0.0.1:8000 -u 50 -r 5 -t 2m --headless

The stages are fractions of the run time (-t), so any duration tells the same story;
see _profiles.STAGES. With the read-heavy user instead:
    locust -f reader.py,market_open.py ReaderUser
"""

import _profiles
from locust import LoadTestShape
from trader import TraderUser  # noqa: F401 - the users this scenario runs


class MarketOpenShape(LoadTestShape):
    use_common_options = True  # -u, -r and -t (the web UI's fields) scale the profile

    def tick(self):
        users, rate, duration = _profiles.options(self.runner.environment.parsed_options)
        return _profiles.tick("market-open", self.get_run_time(), users, rate, duration)
