# A spike: 20% of the peak (-u) users, all of them for the middle fifth of -t, then 20% again.
"""Run it:  locust -f spike.py --host http://127.0.0.1:8000 -u 50 -r 5 -t 2m --headless

The stages are fractions of the run time (-t), so any duration tells the same story;
see _profiles.STAGES. With the read-heavy user instead:  locust -f reader.py,spike.py ReaderUser
"""

import _profiles
from locust import LoadTestShape
from trader import TraderUser  # noqa: F401 - the users this scenario runs


class SpikeShape(LoadTestShape):
    use_common_options = True  # -u, -r and -t (the web UI's fields) scale the profile

    def tick(self):
        users, rate, duration = _profiles.options(self.runner.environment.parsed_options)
        return _profiles.tick("spike", self.get_run_time(), users, rate, duration)
