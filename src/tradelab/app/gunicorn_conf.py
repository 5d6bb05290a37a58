"""gunicorn settings and hooks for the API: multiprocess metrics and JSON logs.

    options = gunicorn_options(bind="127.0.0.1:8000", workers=2, threads=4)
    prepare_multiproc_dir()        # before anything imports prometheus_client

prometheus_client's multiprocess mode needs PROMETHEUS_MULTIPROC_DIR set before
the library is imported, emptied between runs (old workers' files would be summed
in), and every dead worker marked so its live gauges stop counting: `child_exit`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiproc_dir() -> Path:
    """PROMETHEUS_MULTIPROC_DIR, made (a fresh temp dir when unset) and emptied of old samples."""
    raw = os.environ.get(MULTIPROC_ENV)
    if raw:
        path = Path(raw)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):  # only prometheus_client's files
            old.unlink(missing_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="tradelab-api-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported too early: switch it to multiprocess values now
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    return path


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (master): a worker died; its `live*` gauges must stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class ServerEvent(logging.Filter):
    """gunicorn's lines get event "server" (not the logger's name "error")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "event", None):
            record.event = "server" if record.name.startswith("gunicorn") else \
                record.name.rsplit(".", 1)[-1]
        return True


def quiet_access_logger() -> type:
    """gunicorn's Logger, minus the access-log line it builds and then drops.

    With a logconfig_dict gunicorn counts the access log as on and builds every
    request's atoms (a dict of headers and environ: ~4 % of a worker's CPU under load)
    before gunicorn.access, at WARNING here, discards the line. This one asks the logger
    first.
    """
    from gunicorn.glogging import Logger

    class QuietAccessLogger(Logger):
        def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
            if self.access_log.isEnabledFor(logging.INFO):
                super().access(resp, req, environ, request_time)

    return QuietAccessLogger


def log_config(service: str = "api") -> dict[str, Any]:
    """gunicorn's own logs as the same JSON lines as the app's; access log off
    (the metrics count every request, the app logs every trade)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "tradelab.logs.JsonFormatter", "service": service}},
        "filters": {"event": {"()": "tradelab.app.gunicorn_conf.ServerEvent"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                                "filters": ["event"], "stream": "ext://sys.stdout"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": "WARNING"},
    }


def gunicorn_options(bind: str, workers: int, threads: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "proc_name": "tradelab-api",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "logconfig_dict": log_config("api"),
        "logger_class": quiet_access_logger(),
        "child_exit": child_exit,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
    }
    try:  # gunicorn >= 23 opens a control socket at one fixed path per user: two APIs
        # (or a test next to a running lab) would fight over it, and nothing here uses it.
        from gunicorn.config import Config

        if "control_socket_disable" in Config().settings:
            options["control_socket_disable"] = True
    except ImportError:
        pass
    if os.path.isdir("/dev/shm"):  # heartbeat files off disk: no stalls on slow volumes
        options["worker_tmp_dir"] = "/dev/shm"
    return options
