"""`tradelab doctor` names the promises the lab cannot keep on its runtime, as notes."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import free_port
from support.cli import run

from tradelab.runtimes import docker_available

HOOK = "http://127.0.0.1:9/hook?token=s3cret"


def doctor(tmp_path, runtime: str, *flags: str, **settings) -> dict:
    root = tmp_path / "lab"
    root.mkdir(parents=True)
    ports = {k: free_port() for k in ("api", "engine", "postgres", "prometheus",
                                      "alertmanager", "locust", "locust_master")}
    (root / "tradelab.yaml").write_text(yaml.safe_dump({"ports": ports, **settings}))
    result = run("doctor", "--runtime", runtime, "--json", *flags,
                 env={"TRADELAB_HOME": str(root)})
    assert "s3cret" not in result.stdout + result.stderr  # a note never shows a secret
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1), result.stderr
    return report


def notes(report: dict) -> dict[str, str]:
    return {c["check"]: c["detail"] for c in report["checks"] if c["ok"] is None}


def test_local_doctor_notes_the_inline_webhook_url_and_errors_before_the_app(tmp_path):
    report = doctor(tmp_path, "local", alerting={"webhook_url": HOOK})
    found = notes(report)
    assert "no webhook url_file" in found["limit: alert webhook URL"]
    assert "0600" in found["limit: alert webhook URL"]
    assert "gunicorn" in found["limit: errors before the app"]
    assert not any(c["check"].startswith("limit:") and c["ok"] is not None
                   for c in report["checks"])  # notes, never failures
    assert "limit: alert webhook URL" not in notes(doctor(tmp_path / "plain", "local"))


def test_docker_doctor_notes_what_the_log_agent_can_read(tmp_path):
    if not docker_available():
        pytest.skip("no Docker engine answers (start dockerd: tests/docker/start-dockerd.sh)")
    found = notes(doctor(tmp_path, "docker", alerting={"webhook_url": HOOK}))
    assert "other projects' environment secrets" in found[
        "limit: promtail reads every container's files"]
    assert "limit: alert webhook URL" not in found  # the pinned image reads url_file
    without = notes(doctor(tmp_path / "without", "docker", "--without", "promtail"))
    assert "limit: promtail reads every container's files" not in without
