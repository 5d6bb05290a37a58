# Steady load: trader users ramp up at the spawn rate (-r) to the peak (-u) and hold for -t.
"""Run it:  locust -f steady.py --host http://127.0.0.1:8000 -u 50 -r 5 -t 2m --headless

The stages are fractions of the run time (-t), so any duration tells the same story;
see _profiles.STAGES. With the read-heavy user instead:  locust -f reader.py,steady.py ReaderUser
"""

import _profiles
from locust import LoadTestShape
from trader import TraderUser  # noqa: F401 - the users this scenario runs


class SteadyShape(LoadTestShape):
    use_common_options = True  # -u, -r and -t (the web UI's fields) scale the profile

    def tick(self):
        users, rate, duration = _profiles.options(self.runner.environment.parsed_options)
        return _profiles.tick("steady", self.get_run_time(), users, rate, duration)
