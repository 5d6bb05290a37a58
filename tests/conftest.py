"""Shared fixtures: a real PostgreSQL cluster started by the suite, migrated databases.

`pg` is one cluster for the session (initdb + pg_ctl on a free loopback port).
`db` is a fresh, migrated database per test with the three roles' URLs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tradelab.db.cluster import PostgresCluster
from tradelab.db.migrate import migrate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Database:
    name: str
    admin_url: str
    app_url: str
    operator_url: str
    app_password: str
    operator_password: str
    cluster: PostgresCluster


@pytest.fixture(scope="session")
def pg():
    root = Path(tempfile.mkdtemp(prefix="tradelab-pg-"))
    cluster = PostgresCluster(root / "data", port=free_port())
    cluster.password = secrets.token_urlsafe(16)
    cluster.init(cluster.password)
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


# Roles are cluster-wide: one password per role for the whole session.
_APP_PW = secrets.token_urlsafe(16)
_OP_PW = secrets.token_urlsafe(16)


def make_database(pg: PostgresCluster) -> Database:
    import psycopg

    name = f"tl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url("postgres", pg.password), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin_url = pg.url("postgres", pg.password, name)
    migrate(admin_url, app_password=_APP_PW, operator_password=_OP_PW)
    return Database(
        name=name,
        admin_url=admin_url,
        app_url=pg.url("tradelab_app", _APP_PW, name),
        operator_url=pg.url("tradelab_operator", _OP_PW, name),
        app_password=_APP_PW,
        operator_password=_OP_PW,
        cluster=pg,
    )


@pytest.fixture
def db(pg) -> Database:
    return make_database(pg)


@pytest.fixture
def lab_dir(tmp_path, monkeypatch) -> Path:
    """An empty lab directory, also set as TRADELAB_HOME; TRADELAB_* env cleared."""
    for key in list(os.environ):
        if key.startswith("TRADELAB_"):
            monkeypatch.delenv(key)
    lab = tmp_path / "lab"
    monkeypatch.setenv("TRADELAB_HOME", str(lab))
    return lab


@pytest.fixture(scope="session")
def images():
    """The stand-in images (tests/docker/build-images.sh) for a lab on a real Docker
    engine; skipped with the reason when no engine answers or they cannot be built."""
    import subprocess

    from dockerlab import BUILD_SCRIPT, STAND_INS

    from tradelab.runtimes import docker_available

    if not docker_available():
        pytest.skip("no Docker engine answers (start dockerd: tests/docker/start-dockerd.sh)")
    proc = subprocess.run(["sh", str(BUILD_SCRIPT)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        pytest.skip("stand-in images could not be built by tests/docker/build-images.sh: "
                    + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return STAND_INS


# A skip whose reason names one of these fails in CI: CI runs as root with all of them.
REQUIRED_IN_CI = ("docker", "promtool", "prometheus", "alertmanager", "amtool", "stand-in",
                  "locust", "root", "compose")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where CI promises the real components (TRADELAB_REQUIRE_REAL=1, set by .ci/run),
    a test skipped for want of one (Docker engine, promtool, prometheus, Locust, root)
    fails instead: a green CI run then means the Docker and Locust tests really ran."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TRADELAB_REQUIRE_REAL") == "1" and call.excinfo:
        reason = str(call.excinfo.value)
        if any(word in reason.lower() for word in REQUIRED_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"required component missing in CI: {reason}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, pyproject's addopts) a module's tests
    run on one worker, in order, sharing the module's lab; a test marked `spread` (a
    game-day scenario: minutes of waiting on alert windows) goes to whichever worker is
    free, which starts a lab of its own for it. The Docker tests share one worker: one
    image build, one Docker lab at a time on a 2-core machine."""
    for item in items:
        if item.get_closest_marker("docker") is not None:
            item.add_marker(pytest.mark.xdist_group("docker"))
        elif item.get_closest_marker("spread") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
