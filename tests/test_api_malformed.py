"""Malformed requests on the wire, under gunicorn (`tradelab serve api`) and under the
Flask dev server (werkzeug): a 4xx, never a 5xx, and never a new metric series."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests
from conftest import free_port
from support.api import ApiServer

from tradelab.app.api import create_app
from tradelab.lab import Lab
from tradelab.settings import Settings


class DevServer:
    """The app under werkzeug's development server (what `flask run` serves), in a thread."""

    def __init__(self, database_url: str, workdir) -> None:
        from werkzeug.serving import make_server

        app = create_app(Settings(), lab=Lab(workdir / "lab"), database_url=database_url,
                         configure_logging=False)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["gunicorn", "werkzeug"])
def api(request, db, tmp_path):
    server = (ApiServer(db.app_url, tmp_path, workers=1, threads=2)
              if request.param == "gunicorn" else DevServer(db.app_url, tmp_path))
    with server as running:
        running.kind = request.param
        yield running


def raw(api, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as is; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def json_error(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert 400 <= status < 500, (status, body[:300])
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    data = json.loads(body)
    assert set(data) == {"error", "message", "details"}, data
    return data


def test_a_malformed_chunked_body_is_a_400_json_error(api):
    status, headers, body = raw(api, b"POST /trades HTTP/1.1\r\nHost: t\r\n"
                                     b"Content-Type: application/json\r\n"
                                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                     b"zz\r\n")
    assert json_error(status, headers, body)["error"] == "malformed_body"


def test_unknown_methods_share_one_method_label(api):
    for method in ("QZXV1", "QZXV2", "BREW"):
        status, headers, body = raw(api, f"{method} / HTTP/1.1\r\nHost: t\r\n"
                                         "Connection: close\r\n\r\n".encode())
        assert json_error(status, headers, body)["error"] == "method_not_allowed"
    text = requests.get(api.url + "/metrics", timeout=10).text
    assert "QZXV" not in text and "BREW" not in text
    assert 'tradelab_http_requests_total{code="405",method="other",route="/"} 3.0' in text


def test_a_trade_id_too_long_for_the_database_is_a_4xx(api):
    for digits in (20, 4301):
        status, headers, body = raw(api, f"GET /trades/{'9' * digits} HTTP/1.1\r\nHost: t\r\n"
                                         "Connection: close\r\n\r\n".encode())
        if api.kind == "gunicorn" and digits == 4301:
            # gunicorn refuses a request line over 4094 bytes before Flask sees it: a
            # plain-text 414 or 400 (docs/security.md, "Errors answered before the app").
            assert status in (400, 414), body
        else:
            assert json_error(status, headers, body)["error"] == "not_found"
    assert requests.get(api.url + "/trades/9223372036854775807", timeout=10).status_code == 404
