"""`tradelab watch` without a Prometheus: one line that says what to do.

Its queries against a real Prometheus scraping the real app, the climb after `chaos on`
and Ctrl-C: tests/test_observability_e2e.py.
"""

from __future__ import annotations

from conftest import free_port
from typer.testing import CliRunner

from tradelab.cli.main import app


def test_watch_with_the_lab_down_is_one_line(lab_dir, monkeypatch):
    port = free_port()
    monkeypatch.setenv("TRADELAB_PORTS__PROMETHEUS", str(port))
    for args in (["watch", "--once"], ["watch", "--once", "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert result.stderr == (
            f"error: Prometheus does not answer at http://127.0.0.1:{port} ([Errno 111] "
            "Connection refused); is the lab up (`tradelab status`)? Its port is the "
            "setting ports.prometheus\n")
