"""Run the API under gunicorn, in-process: what `tradelab serve api` does.

    serve_api(settings, lab, bind="127.0.0.1:8000", workers=2, threads=4)  # blocks

gunicorn is driven through its BaseApplication, so no config file or separate
`gunicorn` command is involved; each worker builds the app after the fork
(no preload), which keeps database pools out of the master.
"""

from __future__ import annotations

from typing import Any

from tradelab.errors import TradelabError
from tradelab.host import parse_bind, port_free


def check_port_free(host: str, port: int) -> None:
    if not port_free(host, port):
        raise TradelabError(
            f"cannot listen on {host}:{port} (address in use): stop what uses it, "
            "or choose another address with --bind HOST:PORT")


def serve_api(settings: Any, lab: Any, bind: str, workers: int, threads: int) -> None:
    """Serve the API until interrupted (gunicorn master + `workers` forked workers)."""
    from tradelab.app.gunicorn_conf import gunicorn_options, prepare_multiproc_dir

    host, port = parse_bind(bind, option="--bind")
    check_port_free(host, port)
    prepare_multiproc_dir()  # before gunicorn or the app import prometheus_client

    from gunicorn.app.base import BaseApplication

    class ApiServer(BaseApplication):
        def __init__(self) -> None:
            self.options = gunicorn_options(bind, workers, threads)
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self):
            from tradelab.app.api import create_app

            return create_app(settings, lab=lab)

    ApiServer().run()
