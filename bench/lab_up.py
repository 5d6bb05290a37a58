"""Figure 7: `tradelab up` to all healthy, and the memory of the whole running lab.

    python -m bench --only lab

Local runtime: a temp lab (its own ports, `runtime: local`), `tradelab up --runtime
local` timed from the command's start to its exit (it exits when every service is
healthy), then the memory of every process of the lab (supervisord's session: the
embedded PostgreSQL, gunicorn and its workers, the engine, Prometheus, Alertmanager,
the Locust master and worker) as RSS and PSS (shared pages split between processes),
then `tradelab down --volumes`.
Docker (full runs only, when `docker info` answers and the stand-in images of
tests/docker/build-images.sh exist): the same with the lab's own project name, memory
from the containers' cgroup usage. Anchor: the OpenTelemetry demo needs about 6 GB.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import yaml

from bench.harness import BenchError, Figure, Run, clean_env, free_port

GOAL_MIB = 1536
OTEL_DEMO_MIB = 6 * 1024
LOCAL_PORTS = ("api", "engine", "postgres", "prometheus", "alertmanager", "locust",
               "locust_master")
DOCKER_PORTS = ("api", "engine", "postgres", "prometheus", "alertmanager", "grafana", "loki",
                "locust")
STAND_INS = {"postgres": "tradelab-test/postgres:15",
             "prometheus": "tradelab-test/prometheus:2.42",
             "alertmanager": "tradelab-test/alertmanager:0.25",
             "locust": "tradelab-test/locust:2.32.4"}
DOCKER_BASE_IMAGE = "tradelab-test/python:3.11"

LIMITS = """\
Time to healthy: the local runtime starts supervisord, PostgreSQL (initdb on the
first up), the one-shot migration, then the api and engine (each a Python process
that imports Flask/psycopg/prometheus_client) and waits for their health checks; most
of it is process start-up and the health-check poll interval. Memory: the Python
processes dominate (gunicorn master + 2 workers, the engine, Locust master and worker:
30-60 MiB each); PostgreSQL's shared buffers are counted once in PSS."""


def cli(lab: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    tradelab = shutil.which("tradelab")
    if tradelab is None:
        raise BenchError("the console script `tradelab` is not on PATH")
    return subprocess.run([tradelab, *args], env=clean_env(TRADELAB_HOME=str(lab)),
                          capture_output=True, text=True, timeout=timeout)


def service_of(cmdline: str) -> str:
    for mark, name in (("supervisord", "supervisord"), ("postgres", "postgres"),
                       ("serve api", "api"), ("gunicorn", "api"), ("serve engine", "engine"),
                       ("alertmanager", "alertmanager"), ("prometheus", "prometheus"),
                       ("--worker", "locust-worker"), ("locust", "locust-master")):
        if mark in cmdline:
            return name
    return "other"


def local_footprint(lab: Path) -> tuple[dict[str, list[int]], int]:
    """{service: [rss, pss]} in bytes over the lab's processes, and how many there are."""
    import psutil

    from tradelab.lab import Lab
    from tradelab.runtimes.local import LocalRuntime, session_processes
    from tradelab.settings import load_settings

    runtime = LocalRuntime(load_settings(Lab(lab), env={}), Lab(lab), echo=lambda _m: None)
    pid = runtime.supervisor.pid()
    if pid is None:
        raise BenchError("the lab is up but its supervisord is not running")
    by_service: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pids = set(session_processes(os.getsid(pid)))
    for p in list(pids):  # and their children, should any have left the session
        try:
            pids.update(c.pid for c in psutil.Process(p).children(recursive=True))
        except psutil.Error:
            pass
    for p in pids:
        try:
            proc = psutil.Process(p)
            mem = proc.memory_full_info()
            name = service_of(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
        by_service[name][0] += mem.rss
        by_service[name][1] += mem.pss
    return dict(by_service), len(pids)


def measure_local(run: Run, fig: Figure) -> None:
    lab = run.root / "lab-up"
    lab.mkdir()
    (lab / "tradelab.yaml").write_text(yaml.safe_dump(
        {"ports": {k: free_port() for k in LOCAL_PORTS}, "runtime": "local"}))
    started = time.monotonic()
    up = cli(lab, "up", "--runtime", "local")
    seconds = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise BenchError(f"tradelab up failed: {(up.stderr or up.stdout).strip()[-400:]}")
        by_service, count = local_footprint(lab)
        again = time.monotonic()
        second = cli(lab, "up", "--runtime", "local")
        second_s = time.monotonic() - again
    finally:
        cli(lab, "down", "--volumes")
    rss = sum(v[0] for v in by_service.values()) / 2**20
    pss = sum(v[1] for v in by_service.values()) / 2**20
    fig.row("local runtime: `tradelab up` to all healthy (cold, empty lab)", round(seconds, 1),
            "s")
    if second.returncode == 0:
        fig.row("local runtime: second `up` (nothing to do)", round(second_s, 1), "s")
    fig.row("local runtime: memory of the whole lab (PSS)", round(pss), "MiB",
            baseline=GOAL_MIB, baseline_name="goal 1.5 GiB",
            note=f"{count} processes; RSS sum {rss:.0f} MiB")
    fig.row("local runtime: PSS against the OpenTelemetry demo", round(pss), "MiB",
            baseline=OTEL_DEMO_MIB, baseline_name="OTel demo ~6 GB")
    fig.notes.append("local runtime, PSS by service (MiB): " + ", ".join(
        f"{name} {v[1] / 2**20:.0f}" for name, v in sorted(by_service.items(),
                                                           key=lambda kv: -kv[1][1])))
    fig.notes.append("local runtime: Grafana, Loki and Promtail do not run (no binaries on "
                     "this machine); a Docker lab adds them where their images exist.")


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 15 s"
    if info.returncode != 0:
        return "no Docker engine answers `docker info`"
    missing = [i for i in [*STAND_INS.values(), DOCKER_BASE_IMAGE]
               if subprocess.run(["docker", "image", "inspect", i],
                                 capture_output=True).returncode != 0]
    if missing:
        return f"stand-in images missing ({', '.join(missing)}): tests/docker/build-images.sh"
    return None


def docker_memory(project: str) -> tuple[float, int]:
    """MiB in use (cgroup memory minus page cache) over the project's containers."""
    import docker

    client = docker.from_env()
    total, count = 0, 0
    for c in client.containers.list(filters={"label": f"com.docker.compose.project={project}"}):
        stats = c.stats(stream=False)["memory_stats"]
        cache = stats.get("stats", {}).get("inactive_file", stats.get("stats", {})
                                           .get("cache", 0))
        total += stats.get("usage", 0) - cache
        count += 1
    return total / 2**20, count


def measure_docker(run: Run, fig: Figure) -> None:
    lab = run.root / "lab-docker"
    lab.mkdir()
    project = "bench" + secrets.token_hex(3)
    (lab / "tradelab.yaml").write_text(yaml.safe_dump({
        "project": project, "runtime": "docker", "images": dict(STAND_INS),
        "build": {"base_image": DOCKER_BASE_IMAGE},
        "ports": {k: free_port() for k in DOCKER_PORTS}}))
    started = time.monotonic()
    up = cli(lab, "up", "--runtime", "docker", "--without", "grafana,loki,promtail",
             timeout=400)
    seconds = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise BenchError((up.stderr or up.stdout).strip()[-400:])
        mib, count = docker_memory(project)
    finally:
        cli(lab, "down", "--volumes", timeout=300)
    fig.row("Docker: `tradelab up` to all healthy (image build included)", round(seconds, 1),
            "s", note="without grafana, loki, promtail (no images here)")
    fig.row("Docker: memory of the lab's containers", round(mib), "MiB", baseline=GOAL_MIB,
            baseline_name="goal 1.5 GiB", note=f"{count} containers, cgroup usage minus cache")


def run_figure(run: Run) -> Figure:
    fig = Figure("lab", "Time to ready and footprint of the whole lab",
                 goal="the whole lab under 1.5 GiB (the OpenTelemetry demo needs ~6 GB)",
                 limits=LIMITS)
    measure_local(run, fig)
    reason = "--quick: no Docker lab" if run.quick else docker_unavailable()
    if reason:
        fig.notes.append(f"Docker runtime not measured: {reason}.")
        return fig
    try:
        measure_docker(run, fig)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        fig.notes.append(f"Docker runtime: `tradelab up` failed: {exc}")
    return fig
