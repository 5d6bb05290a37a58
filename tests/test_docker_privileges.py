"""Least privilege on a real Docker engine: what the driver's containers may do.

Two small labs, not the whole stack: Prometheus alone (the stand-in image), and the
log agent's container as the driver creates it with a probe script in place of
promtail (no Promtail image can be had here), which reports what it can read and
write. Skipped with the reason when no engine answers or the images cannot be built.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

import docker
import pytest
import requests
import yaml
from dockerlab import Lab, until, write_lab

from tradelab.lab import Lab as TradelabLab
from tradelab.orchestrator import converge, render_for
from tradelab.runtimes.docker import DockerRuntime
from tradelab.settings import load_settings

pytestmark = pytest.mark.docker

DEBIAN = "tradelab-test/debian:bookworm"
LOGS = "/var/lib/docker/containers"
# What the log agent's container can do, one line each (read by the test below).
PROBE = f"""
set -u
f=$(ls {LOGS}/*/*-json.log | head -n 1)
head -c 1 "$f" >/dev/null && echo "logs: readable"
touch {LOGS}/planted 2>/dev/null && echo "logs: writable" || echo "logs: read-only"
touch /etc/planted 2>/dev/null && echo "root: writable" || echo "root: read-only"
touch /var/lib/promtail/positions.yaml && echo "positions: writable"
grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status
echo probed
exec sleep 600
"""


@pytest.fixture
def lab(images, tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    the_lab = Lab(write_lab(tmp_path / "lab", f"tlpriv-{uuid.uuid4().hex[:8]}"))
    yield the_lab
    the_lab.run("down", "--volumes", "--runtime", "docker", ok=False)


def host_config(lab: Lab, service: str) -> dict:
    (container,) = docker.from_env().containers.list(
        all=True, filters={"label": [f"com.docker.compose.project={lab.project}",
                                     f"com.docker.compose.service={service}"]})
    return container.attrs["HostConfig"]


def test_the_log_agent_reads_every_containers_log_as_root_without_any_capability(lab):
    """The promtail service as the Docker driver creates it (its caps, root file system,
    mounts and user), running a probe instead of promtail: it reads another container's
    json log, writes only its positions volume, holds no capability."""
    the_lab = TradelabLab(lab.root)
    settings = load_settings(the_lab, env={})
    driver = DockerRuntime(settings, the_lab, echo=lambda _: None)
    the_lab.ensure()
    render_for(driver, settings, the_lab, ["loki", "promtail"])  # its config, as `up` does
    probe = replace(driver.stack.services["promtail"], image=DEBIAN, entrypoint=("sh", "-c"),
                    command=(PROBE,), depends_on=(), restart="no")
    driver.stack = replace(driver.stack, services={**driver.stack.services, "promtail": probe})
    converge(driver, ["promtail"], build=False, timeout=60, echo=lambda _: None)
    (container,) = driver.containers("promtail")

    def probed() -> str | None:
        text = container.logs().decode()
        return text if "probed" in text else None

    output = until("the probe to finish", probed, timeout=30)
    lines = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    assert {k: v.strip() for k, v in lines.items() if k in ("logs", "root", "positions")} \
        == {"logs": "read-only", "root": "read-only", "positions": "writable"}, output
    assert "logs: readable" in output, output
    assert int(lines["CapEff"], 16) == 0 and int(lines["CapBnd"], 16) == 0, output
    assert lines["NoNewPrivs"].strip() == "1", output
    config = host_config(lab, "promtail")
    assert config["CapDrop"] == ["ALL"] and not config["CapAdd"]
    assert config["ReadonlyRootfs"] is True
    assert config["SecurityOpt"] == ["no-new-privileges:true"]
    assert container.attrs["Config"]["User"] in ("", "0", "root")


def test_prometheus_runs_without_privileges_and_reloads_on_sighup(lab):
    """Prometheus with no capability and a read-only root still stores its TSDB; no
    lifecycle API (POST /-/quit refused); a rule change reaches it by SIGHUP
    (`docker kill --signal`): the same container, the new rules."""
    lab.run("up", "--runtime", "docker", "--only", "prometheus", "--timeout", "2m")
    config = host_config(lab, "prometheus")
    assert config["CapDrop"] == ["ALL"] and not config["CapAdd"]
    assert config["ReadonlyRootfs"] is True
    assert config["SecurityOpt"] == ["no-new-privileges:true"]
    base = f"http://127.0.0.1:{lab.config['ports']['prometheus']}"

    def objective() -> str:
        groups = requests.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return next(r["query"] for g in groups for r in g["rules"]
                    if r["name"] == "tradelab:slo_objective"
                    and r["labels"].get("slo") == "availability")

    assert until("the rules", objective) == "vector(0.999)"
    for path in ("/-/quit", "/-/reload"):
        assert requests.post(base + path, timeout=5).status_code in (403, 404), path
    before = lab.ids()

    config_file = lab.root / "tradelab.yaml"
    settings = yaml.safe_load(config_file.read_text())
    settings["slo"] = {"availability": 0.99}
    config_file.write_text(yaml.safe_dump(settings))
    result = lab.run("up", "--runtime", "docker", "--only", "prometheus", "--no-build")
    assert "reloading prometheus" in result.output, result.output
    until("the changed rule", lambda: objective() == "vector(0.99)", timeout=15)
    assert lab.ids() == before  # reloaded, not recreated
