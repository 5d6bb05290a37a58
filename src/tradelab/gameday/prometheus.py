"""The lab's Prometheus HTTP API: instant and range queries.

    value = scalar(settings, "sum(tradelab_order_backlog)")       # float or None
    rows = query(settings, 'tradelab:slo_error_ratio:rate5m')     # [{"metric", "value"}]
    series = query_range(settings, expr, start, end, step=1.0)     # [{"metric", "values"}]
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tradelab.errors import TradelabError


def prometheus_url(settings) -> str:
    host = settings.bind_address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.ports.prometheus}"


def _get(settings, path: str, params: dict[str, Any], timeout_s: float = 10.0) -> Any:
    base = prometheus_url(settings)
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise TradelabError(f"Prometheus at {base} refused the query {params.get('query')!r}: "
                            f"{exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TradelabError(f"Prometheus does not answer at {base} "
                            f"({getattr(exc, 'reason', exc)}); is the lab up "
                            "(`tradelab status`)?") from None
    return body["data"]["result"]


def query(settings, expr: str) -> list[dict[str, Any]]:
    """Instant vector: [{"metric": labels, "value": float}] (NaN kept as NaN)."""
    return [{"metric": r["metric"], "value": float(r["value"][1])}
            for r in _get(settings, "/api/v1/query", {"query": expr})]


def scalar(settings, expr: str) -> float | None:
    """The first sample of `expr`, or None when it has none (or it is NaN)."""
    rows = query(settings, expr)
    if not rows or math.isnan(rows[0]["value"]):
        return None
    return rows[0]["value"]


def query_range(settings, expr: str, start: float, end: float,
                step: float = 1.0) -> list[dict[str, Any]]:
    """Range vector: [{"metric": labels, "values": [[unix time, float], ...]}]."""
    rows = _get(settings, "/api/v1/query_range",
                {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                 "step": f"{max(step, 0.5):g}"}, timeout_s=30.0)
    return [{"metric": r["metric"], "values": [[float(t), float(v)] for t, v in r["values"]]}
            for r in rows]
