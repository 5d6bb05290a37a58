"""Which page of a web UI opens on the binary actually running: asked once, by a probe.

    web_page("prometheus", "http://127.0.0.1:9090")
    # WebPage(url="http://127.0.0.1:9090/classic/alerts", note="")   Debian's 2.42
    web_page("alertmanager", "http://127.0.0.1:9093")
    # WebPage(url=None, note="no web UI in this build: `tradelab alerts` lists what fires")

Builds differ in what they serve: Debian's Prometheus 2.42 has no React UI (its
/alerts is a 404, /classic/alerts works) while Prometheus 3 has no classic UI; Debian's
Alertmanager has no UI at all (/ is a page saying so and the UI's /script.js a 404).
So `up` and `status` ask the running server instead of printing a path from the docs.
A server that does not answer keeps the URL it was given: nothing is known yet.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

# The alerts page first: the page the loop sends a user to.
PAGES = {"prometheus": ("/alerts", "/classic/alerts")}
# A file only a build with the UI serves.
UI_ASSET = {"alertmanager": "/script.js"}
REPLACED_BY = {"alertmanager": "`tradelab alerts` lists what fires"}

# Straight to the lab on 127.0.0.1, whatever HTTP_PROXY says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class WebPage:
    url: str | None  # None: nothing to open in a browser
    note: str = ""  # why, and the command that replaces it


def web_page(service: str, base_url: str, timeout: float = 1.0) -> WebPage:
    """The URL of `service`'s UI that answers 200 at `base_url`, or why there is none."""
    base = base_url.rstrip("/")
    if service in PAGES:
        for path in PAGES[service]:
            code = _status(base + path, timeout)
            if code is None:
                return WebPage(base_url)
            if code == 200:
                return WebPage(base + path)
        return WebPage(base_url)
    if service in UI_ASSET:
        code = _status(base + UI_ASSET[service], timeout)
        if code == 404:
            return WebPage(None, f"no web UI in this build: {REPLACED_BY[service]}")
    return WebPage(base_url)


def _status(url: str, timeout: float) -> int | None:
    """The HTTP status of GET `url`, or None when nothing answers."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None
