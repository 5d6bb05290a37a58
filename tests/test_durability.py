"""Durability: kill -9 of the api, the engine or the database during `tradelab load`
loses no acknowledged order, and `tradelab verify` proves it.

A local lab (real supervisord, PostgreSQL, gunicorn, engine, Locust master and worker)
for the module. Each test starts a load run, SIGKILLs one service while orders flow
(the api and the engine through `tradelab chaos on kill-…`, PostgreSQL through the
runtime's kill of its whole process group: a crash, then crash recovery), lets the run
end, and asks `tradelab verify --run ID --json` as a user would. Orders whose answer
never came are indeterminate, present or absent; an acknowledged one must be there.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from test_local_runtime import LocalLab, ready, wait_for, write_ports

from tradelab.db.connect import lab_database_url
from tradelab.loadtest._ledger import read_ledger
from tradelab.runtimes.local_postgres import postgres_data_dir

pytestmark = pytest.mark.slow

LOAD_S = 24
KILL_AFTER_S = 8


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("durability") / "lab"
    write_ports(root)
    lab = LocalLab(root)
    try:
        lab.up("cold")
        yield lab
    finally:
        lab.runtime().down(volumes=True)
        assert not postgres_data_dir(lab.lab).exists()


def start_load(lab: LocalLab) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env["TRADELAB_HOME"] = str(lab.root)
    return subprocess.Popen(
        ["tradelab", "load", "--users", "8", "--spawn-rate", "8", "--duration", f"{LOAD_S}s",
         "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_postgres(lab: LocalLab) -> None:
    runtime = lab.runtime()
    kill = getattr(runtime, "kill", None) or runtime.kill_service
    kill("postgres")


def backlog(lab: LocalLab) -> int:
    url = lab_database_url(lab.settings, lab.lab, "operator")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute("SELECT count(*) FROM trades WHERE status = 'NEW'").fetchone()[0]
    except psycopg.OperationalError:
        return -1


def ledger_lines(files: list[Path]) -> list[dict]:
    return [json.loads(x) for f in files for x in f.read_text().splitlines() if x.endswith("}")]


@pytest.mark.parametrize("service", ["api", "engine", "postgres"])
def test_kill_9_during_load_loses_no_acknowledged_order(lab, service):
    before = lab.pid(service)
    load = start_load(lab)
    try:
        time.sleep(KILL_AFTER_S)
        killed_at = time.time()
        if service == "postgres":
            kill_postgres(lab)
        else:
            killed = lab.cli("chaos", "on", f"kill-{service}")
            assert killed.returncode == 0, killed.stderr
        wait_for(lambda: lab.pid(service) not in (0, before), 60,
                 f"supervisord to restart the {service}")
        out, err = load.communicate(timeout=LOAD_S + 180)
    finally:
        if load.poll() is None:
            load.kill()
        lab.cli("chaos", "off")
    summary = json.loads(out)  # exit 1 is expected: the kill fails some requests
    wait_for(lambda: ready(lab.api), 60, "the api to be ready again")
    wait_for(lambda: backlog(lab) == 0, 90, "the engine to work off the backlog")

    ledger = read_ledger(lab.root / "state" / "load" / summary["run_id"])
    assert len(ledger.acknowledged) > 20, (summary, err)
    # The run straddles the kill: orders were acknowledged before it and after it.
    acked_at = [line["ts"] for line in ledger_lines(ledger.files)
                if line["event"] == "acknowledged"]
    assert min(acked_at) < killed_at < max(acked_at)
    result = lab.cli("verify", "--run", summary["run_id"], "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, (result.stderr, report["violations"][:5])
    assert report["ok"] and report["counts"]["lost"] == 0
    assert report["counts"]["ok"] == len(ledger.acknowledged)
    undecided = report["counts"]["indeterminate_present"] + report["counts"][
        "indeterminate_absent"]
    assert report["counts"]["ok"] + undecided == len(ledger.attempted)
    print(f"\n[durability] kill -9 {service}: {report['counts']}")
