"""JSON logs, one object per line: ts, level, service, event, message (+ trade ids).

    setup_logging("api")
    log = logging.getLogger("tradelab.api")
    log.info("trade accepted", extra={"event": "trade_accepted", "trade_id": 7,
                                      "client_order_id": "abc"})

Only `service`, `level` and `event` are meant to become Loki labels; everything
else (trade_id, client_order_id, durations) stays in the line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "event": getattr(record, "event", None) or record.name.rsplit(".", 1)[-1],
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO", stream=None) -> None:
    """Send every `tradelab.*` log record to stdout as JSON lines for `service`."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger("tradelab")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
