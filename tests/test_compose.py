"""The rendered docker-compose.yml run by `docker compose` itself: the same lab as `up`.

A lab rendered with `tradelab render` is started with `docker compose up -d --wait`
(the stand-in images, without grafana, loki, promtail, which cannot be had here),
then looked at and driven with tradelab's own commands, as a user who prefers compose
would. The tests share that lab and run in file order; the last one takes it down
with `docker compose down --volumes` and finds nothing left. Skipped with the reason
where no engine or no `docker compose` (v2) answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import docker
import pytest
import requests
from dockerlab import (
    LABEL_PROJECT,
    RUNNING,
    WITHOUT,
    Lab,
    chaos_failures,
    order,
    until,
    write_lab,
)

pytestmark = pytest.mark.docker
SLACK_URL = "https://hooks.slack.invalid/services/T0/B0/compose-test"


def _compose_version() -> str | None:
    if not shutil.which("docker"):
        return None
    proc = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True,
                          text=True, timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def compose_lab(images, tmp_path_factory):
    if not _compose_version():
        pytest.skip("`docker compose` (v2) is not installed: tests/docker/install-compose.sh")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("TRADELAB_"):
                mp.delenv(key)
        # A Slack URL: a secret Alertmanager (the image's own user) reads from a file.
        the_lab = Lab(write_lab(tmp_path_factory.mktemp("composelab") / "lab",
                                f"tlcompose-{uuid.uuid4().hex[:8]}",
                                alerting={"slack_webhook_url": SLACK_URL}))
        the_lab.run("render", "--without", WITHOUT)  # images that cannot be had here
        yield the_lab
        compose(the_lab, "down", "--volumes", "--timeout", "5", check=False)


def compose(compose_lab: Lab, *args: str, check: bool = True, timeout: float = 600):
    proc = subprocess.run(
        ["docker", "compose", "--project-directory", str(compose_lab.root / "rendered"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=compose_lab.root / "rendered")
    if check:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def test_compose_builds_the_app_image_up_would_accept(compose_lab):
    from tradelab.const import LABEL_CONTEXT_HASH

    compose(compose_lab, "build", "migrate")
    doc = json.loads(compose(compose_lab, "config", "--format", "json").stdout)
    image = docker.from_env().images.get(doc["services"]["api"]["image"])
    assert image.labels[LABEL_CONTEXT_HASH] == \
        doc["services"]["migrate"]["build"]["labels"][LABEL_CONTEXT_HASH]


def test_compose_up_brings_every_service_to_healthy(compose_lab):
    compose(compose_lab, "up", "--detach", "--wait", "--wait-timeout", "300")
    by_name = compose_lab.assert_running()  # tradelab sees compose's containers as its own lab
    assert by_name["api"]["url"] == compose_lab.api


def test_each_service_reads_only_its_own_secrets_as_its_user(compose_lab):
    client = docker.from_env()

    def listing(service: str) -> list[str]:
        container = client.containers.get(f"{compose_lab.project}-{service}-1")
        code, out = container.exec_run(["sh", "-c", "stat -c '%u %a %n' /run/secrets/*"])
        assert code == 0, out
        return out.decode().split("\n")[:-1]

    assert listing("api") == ["10001 400 /run/secrets/app_db_password"]
    assert listing("postgres") == ["0 444 /run/secrets/postgres_password"]
    assert listing("alertmanager") == ["0 444 /run/secrets/slack_webhook_url"]
    # Alertmanager loaded a config that reads the URL from that file (it is healthy, and
    # the URL itself is in no rendered file).
    status = requests.get(f"http://127.0.0.1:{compose_lab.config['ports']['alertmanager']}"
                          "/api/v2/status", timeout=5).json()
    assert "/run/secrets/slack_webhook_url" in status["config"]["original"]
    assert not any(SLACK_URL in p.read_text(errors="replace")
                   for p in (compose_lab.root / "rendered").rglob("*") if p.is_file())
    container = client.containers.get(f"{compose_lab.project}-api-1")
    code, out = container.exec_run(["cat", "/run/secrets/app_db_password"])
    assert code == 0 and out.decode() == compose_lab.root.joinpath(
        "secrets", "app_db_password").read_text()


def test_orders_flow_and_operator_commands_read_them(compose_lab):
    resp = order(compose_lab, f"cmp-{uuid.uuid4().hex[:8]}")
    assert resp.status_code == 201, resp.text
    trade_id = compose_lab.config["trade_id"] = resp.json()["id"]
    until("the engine to execute the trade", lambda: requests.get(
        f"{compose_lab.api}/trades/{trade_id}", timeout=5).json()["status"] != "NEW")
    found = json.loads(compose_lab.run("find-trade", "--id", str(trade_id), "--json").stdout)
    assert found["client_order_id"] == resp.json()["client_order_id"]
    assert [e["event"] for e in found["events"]][0] == "received"


def test_prometheus_scrapes_the_compose_lab(compose_lab):
    url = f"http://127.0.0.1:{compose_lab.config['ports']['prometheus']}/api/v1/targets"

    def healthy_jobs():
        targets = requests.get(url, timeout=5).json()["data"]["activeTargets"]
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return up if {"api", "engine", "locust-master"} <= up else None

    until("api, engine and locust-master scraped", healthy_jobs, timeout=90)


def test_chaos_reaches_the_compose_containers(compose_lab):
    assert chaos_failures(compose_lab, "--rate", "1.0")


def test_load_writes_its_ledger_from_the_compose_locust(compose_lab):
    # The Locust image writes as its own uid into <lab>/state/load, prepared by render.
    result = compose_lab.run("load", "--users", "2", "--spawn-rate", "2", "--duration", "5s",
                     "--json")
    summary = json.loads(result.stdout)
    assert summary["orders"]["attempted"] > 0
    assert summary["orders"]["acknowledged"] == summary["orders"]["attempted"]


def test_tradelab_up_and_docker_compose_up_take_the_lab_over_from_each_other(compose_lab):
    # Each recreates the other's containers (their configuration hashes differ) instead
    # of failing on a container name already in use; the data stays.
    compose_lab.run("up", "--without", WITHOUT, "--no-build", "--timeout", "5m")
    compose(compose_lab, "up", "--detach", "--wait", "--wait-timeout", "300")
    lines = compose(compose_lab, "ps", "--all", "--format", "json").stdout.splitlines()
    seen = {json.loads(line)["Service"] for line in lines if line.strip()}
    assert set(RUNNING) | {"migrate", "secrets-init"} == seen
    trade = requests.get(f"{compose_lab.api}/trades/{compose_lab.config['trade_id']}", timeout=5)
    assert trade.status_code == 200, trade.text


def test_compose_down_volumes_leaves_nothing(compose_lab):
    compose(compose_lab, "down", "--volumes", "--timeout", "5")
    client = docker.from_env()
    flt = {"label": f"{LABEL_PROJECT}={compose_lab.project}"}
    assert client.containers.list(all=True, filters=flt) == []
    assert client.volumes.list(filters=flt) == []
    assert client.networks.list(filters=flt) == []
