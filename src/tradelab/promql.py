"""Instant queries against the lab's Prometheus (its HTTP API), for `watch` and `alerts`.

    url = prometheus_url(settings)                 # http://127.0.0.1:9090
    query(url, "sum(rate(tradelab_http_requests_total[1m]))")   # [(labels, value), ...]
    scalar(url, "...")                             # the first value, or None

An unreachable Prometheus raises PrometheusUnavailable (a TradelabError) saying what
to do; a query Prometheus rejects is a TradelabError naming the query.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from tradelab.errors import TradelabError


class PrometheusUnavailable(TradelabError):
    pass


def published_url(settings, port: int) -> str:
    """http://host:port of a lab service published on settings.bind_address."""
    host = settings.bind_address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def prometheus_url(settings) -> str:
    return published_url(settings, settings.ports.prometheus)


def query(url: str, expr: str, timeout_s: float = 3.0) -> list[tuple[dict[str, str], float]]:
    """The instant vector `expr` evaluates to now: (labels, value) per series."""
    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # 400/422: Prometheus rejected the query
        try:
            detail = json.load(exc).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise TradelabError(f"Prometheus rejected the query {expr!r}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusUnavailable(
            f"Prometheus does not answer at {url} ({reason}); is the lab up "
            "(`tradelab status`)? Its port is the setting ports.prometheus") from None
    data = body.get("data", {})
    if data.get("resultType") == "scalar":
        return [({}, float(data["result"][1]))]
    return [(s.get("metric", {}), float(s["value"][1])) for s in data.get("result", [])]


def scalar(url: str, expr: str) -> float | None:
    """The value of a one-series query; None when it has no series or is NaN (0/0)."""
    rows = query(url, expr)
    if not rows or math.isnan(rows[0][1]):
        return None
    return rows[0][1]
