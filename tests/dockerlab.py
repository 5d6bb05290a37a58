"""Helpers for the tests that run a lab on a real Docker engine (test_docker,
test_compose): the stand-in images, a lab directory pointed at them, the CLI on it.

No registry is reachable on CI, so tests/docker/build-images.sh builds stand-ins with
the official images' interface and the lab's tradelab.yaml points `images:` at them
(the `images` fixture in conftest.py builds them). Grafana, Loki and Promtail cannot
be had here: run without them (WITHOUT).
"""

from __future__ import annotations

import json
from pathlib import Path

import requests
import yaml
from conftest import free_port
from support.polling import poll as support_poll
from support.polling import wait_for
from typer.testing import CliRunner

from tradelab.cli.main import app
from tradelab.const import LABEL_PROJECT

HERE = Path(__file__).parent
BUILD_SCRIPT = HERE / "docker" / "build-images.sh"
STAND_INS = {
    "postgres": "tradelab-test/postgres:15",
    "prometheus": "tradelab-test/prometheus:2.42",
    "alertmanager": "tradelab-test/alertmanager:0.25",
    "locust": "tradelab-test/locust:2.32.4",
}
BASE_IMAGE = "tradelab-test/python:3.11"
WITHOUT = "grafana,loki,promtail"
RUNNING = ["postgres", "api", "engine", "prometheus", "alertmanager", "locust-master",
           "locust-worker"]


def write_lab(root: Path, project: str, **extra) -> Path:
    config = {
        "project": project,
        "ports": {k: free_port() for k in ("api", "engine", "postgres", "prometheus",
                                           "alertmanager", "grafana", "loki", "locust")},
        "build": {"base_image": BASE_IMAGE},
        "images": dict(STAND_INS),
        **extra,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "tradelab.yaml").write_text(yaml.safe_dump(config))
    return root


class Lab:
    """A lab directory with its own project name, driven through the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = yaml.safe_load((root / "tradelab.yaml").read_text())
        self.project = self.config["project"]
        self.api = f"http://127.0.0.1:{self.config['ports']['api']}"

    def run(self, *args: str, ok: bool = True):
        result = CliRunner().invoke(app, ["--lab-dir", str(self.root), *args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def status(self) -> dict:
        return json.loads(self.run("status", "--json").stdout)

    def assert_running(self) -> dict[str, dict]:
        """Every service but those WITHOUT running (healthy where it has a check) and
        migrate exited 0, as `status --json` reports it; its services by name."""
        report = self.status()
        assert report["runtime"] == "docker"
        by_name = {s["name"]: s for s in report["services"]}
        for name in RUNNING:
            assert by_name[name]["state"] == "running", by_name[name]
        for name in ("postgres", "api", "engine", "prometheus", "alertmanager",
                     "locust-master"):
            assert by_name[name]["health"] == "healthy", by_name[name]
        assert by_name["migrate"]["state"] == "exited", by_name["migrate"]
        assert by_name["migrate"]["detail"] == "exit 0", by_name["migrate"]
        assert "chaos" in report
        return by_name

    def ids(self) -> dict[str, str]:
        import docker

        client = docker.from_env()
        found = client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}="
                                                                     f"{self.project}"})
        return {c.name: c.id for c in found}

    def leftovers(self) -> dict[str, list[str]]:
        import docker

        client = docker.from_env()
        flt = {"label": f"{LABEL_PROJECT}={self.project}"}
        return {
            "containers": [c.name for c in client.containers.list(all=True, filters=flt)],
            "volumes": [v.name for v in client.volumes.list(filters=flt)],
            "networks": [n.name for n in client.networks.list(filters=flt)],
        }


def until(what: str, check, timeout: float = 60, every: float = 0.5):
    """check()'s first true value (HTTP errors and bad JSON count as "not yet")."""
    return wait_for(check, timeout, what, every=every, ignore=_NOT_YET)


def poll(check, timeout: float, every: float = 1):
    """check()'s first true value within `timeout`, else None."""
    return support_poll(check, timeout, every=every, ignore=_NOT_YET)


_NOT_YET = (requests.RequestException, ValueError)


def order(lab: Lab, key: str) -> requests.Response:
    return requests.post(f"{lab.api}/trades", timeout=10, json={
        "client_order_id": key, "symbol": "AAPL", "side": "BUY", "quantity": 3})


def chaos_failures(lab: Lab, *flags: str) -> list[dict]:
    """`chaos on` (with `flags`) until investigate-failures finds FAILED trades with a
    CHAOS reason; those trades. Chaos is off again when this returns."""
    lab.run("chaos", "on", *flags)
    try:
        def failures():
            out = json.loads(lab.run("investigate-failures", "--json").stdout)
            return [f for f in out["failures"] if "CHAOS" in (f["failure_reason"] or "")]

        found = until("FAILED trades from chaos", failures, timeout=60, every=1)
        assert all(f["status"] == "FAILED" for f in found)
        assert lab.status()["chaos"], "status shows no active fault"
        return found
    finally:
        lab.run("chaos", "off")
