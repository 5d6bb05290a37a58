"""What every game-day probe and action reads from Chaos Toolkit's `configuration`.

    settings, lab = lab_of(configuration)          # tradelab_lab_dir, else TRADELAB_HOME
    seconds = number(configuration, "fault_for_s", 60)

Keys (all optional but `fault` and `expected_alert`): tradelab_lab_dir, fault,
fault_rate, fault_latency_ms, expected_alert, warmup_s, fault_for_s, detect_timeout_s,
recover_timeout_s, users, poll_s. Chaos Toolkit may hand values in as text (from the
environment or `--var`), so numbers are converted here, in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from tradelab.errors import TradelabError

# A child of Chaos Toolkit's logger: `chaos run` shows these lines as its own.
log = logging.getLogger("chaostoolkit.tradelab")

DEFAULTS: dict[str, float] = {
    "warmup_s": 30.0,
    "fault_for_s": 60.0,
    "detect_timeout_s": 600.0,
    "recover_timeout_s": 900.0,
    "users": 10,
    "poll_s": 1.0,
}


def lab_of(configuration: dict[str, Any] | None):
    """(settings, lab) of the lab the experiment runs against."""
    from tradelab.lab import Lab
    from tradelab.settings import load_settings

    lab = Lab.from_flag((configuration or {}).get("tradelab_lab_dir") or None)
    return load_settings(lab), lab


def number(configuration: dict[str, Any] | None, key: str,
           default: float | None = None) -> float:
    value = (configuration or {}).get(key)
    if value in (None, ""):
        value = DEFAULTS.get(key, default) if default is None else default
    try:
        return float(value)  # type: ignore[arg-type]  # a bad value is the except below
    except (TypeError, ValueError):
        raise TradelabError(f"game-day configuration {key}: {value!r} is not a number") from None


def text(configuration: dict[str, Any] | None, key: str) -> str:
    value = (configuration or {}).get(key)
    if not value:
        raise TradelabError(f"the experiment's configuration needs {key!r}")
    return str(value)
