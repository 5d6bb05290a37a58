"""Human durations for flags such as `--for 5m` or `--since 1h30m`.

    >>> parse_duration("1h30m")
    5400.0
    >>> format_duration(95)
    '1m35s'
    >>> prometheus_duration(parse_duration("3d") * 0.1)
    '7h12m'
"""

import math
import re

from tradelab.errors import TradelabError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_S = 30 * 86400  # a month: longer is a typo, and past it datetimes overflow
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float | int, *, what: str = "duration") -> float:
    """Seconds in `text` ("90s", "5m", "1h30m", "2d", or a bare number of seconds)."""
    if isinstance(text, bool):
        raise TradelabError(f"invalid {what} {text!r}: use e.g. 30s, 5m, 1h30m")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip().lower()
        try:
            seconds = float(s)
        except ValueError:
            parts = _PART.findall(s)
            if not s or "".join(n + u for n, u in parts) != s:
                raise TradelabError(
                    f"invalid {what} {text!r}: use e.g. 30s, 5m, 1h30m"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if math.isnan(seconds) or seconds <= 0:
        raise TradelabError(f"invalid {what} {text!r}: must be more than zero")
    if seconds > MAX_DURATION_S:
        raise TradelabError(f"invalid {what} {text!r}: at most {format_duration(MAX_DURATION_S)}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: 45s, 1m35s, 2h5m, 3d4h."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out[:2])


def prometheus_duration(seconds: float) -> str:
    """`seconds` as a Prometheus duration (whole seconds, at least 1s): 30s, 3m, 7h12m."""
    seconds = max(1, int(round(seconds)))
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
