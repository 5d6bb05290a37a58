"""The ops, db and config commands: through typer's runner and as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from conftest import free_port
from support.cli import invoke, run
from test_ops import CHAOS, TIMEOUT, add_trade

from tradelab import __version__
from tradelab.db.cluster import PostgresCluster
from tradelab.db.migrate import available, latest_version


def assert_one_line_error(result, contains: str) -> None:
    stderr = result.stderr if hasattr(result, "stderr") and result.stderr is not None else ""
    assert result.returncode == 1, (result.stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert contains in lines[0], lines[0]
    assert "Traceback" not in stderr + result.stdout


@pytest.fixture
def admin(db):
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        yield conn


# -- find-trade ----------------------------------------------------------------------

def test_find_trade_table_shows_trade_and_timeline(db, admin, lab_dir):
    trade_id = add_trade(admin, status="FAILED", reason=CHAOS, symbol="TSLA",
                         client_order_id="cli-1")
    result = invoke("find-trade", "--id", str(trade_id), "--database-url", db.operator_url)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "client_order_id" in out and "cli-1" in out and "TSLA" in out
    assert CHAOS in out
    assert "time" in out and "event" in out and "detail" in out
    assert out.index("accepted") < out.index("executed")


def test_find_trade_json_by_client_order_id(db, admin, lab_dir):
    trade_id = add_trade(admin, status="FILLED", fill_price="12.5", client_order_id="cli-2")
    result = invoke("find-trade", "--client-order-id", "cli-2", "--json",
                    "--database-url", db.operator_url)
    assert result.exit_code == 0, result.output
    trade = json.loads(result.output)
    assert trade["id"] == trade_id and trade["fill_price"] == 12.5
    assert [e["status"] for e in trade["events"]] == ["NEW", "FILLED"]


def test_find_trade_reads_the_database_url_from_the_environment(db, admin, lab_dir):
    trade_id = add_trade(admin, client_order_id="cli-env")
    result = invoke("find-trade", "--id", str(trade_id), "--json",
                    env={"TRADELAB_DATABASE_URL": db.operator_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["client_order_id"] == "cli-env"


def test_operator_commands_read_as_the_operator_role_whatever_the_database_url(
        db, admin, lab_dir):
    """TRADELAB_DATABASE_URL names the app role (here with a wrong password): the operator
    commands use its server and database, as the read-only operator role."""
    from tradelab.db.connect import resolve_url
    from tradelab.lab import Lab
    from tradelab.settings import load_settings

    lab = Lab.from_flag(lab_dir)
    lab.write_secret("operator_db_password", db.operator_password)
    trade_id = add_trade(admin, status="FAILED", reason=CHAOS, client_order_id="cli-role")
    app_url = db.app_url.replace(f":{db.app_password}@", ":not-the-app-password@")
    env = {"TRADELAB_DATABASE_URL": app_url}
    result = invoke("find-trade", "--id", str(trade_id), "--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["client_order_id"] == "cli-role"
    result = invoke("investigate-failures", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["by_reason"] == {"EXCHANGE_CONNECTION_FAILED": 1}
    for given in (db.app_url, db.admin_url):
        settings = load_settings(lab, env={"TRADELAB_DATABASE_URL": given})
        with psycopg.connect(resolve_url(None, settings, lab, "operator")) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "tradelab_operator"
        assert resolve_url(None, settings, lab, "app") == given  # the services: as given


@pytest.mark.parametrize("args, message", [
    (["--id", "999"], "trade 999 not found"),
    ([], "give exactly one of --id N or --client-order-id KEY"),
    (["--id", "1", "--client-order-id", "x"], "give exactly one"),
])
def test_find_trade_user_errors(db, lab_dir, args, message):
    result = invoke("find-trade", *args, "--database-url", db.operator_url)
    assert result.exit_code == 1, result.output
    assert result.output.strip().startswith(f"error: {message}")
    assert len(result.output.strip().splitlines()) == 1


# -- investigate-failures --------------------------------------------------------------

def test_investigate_failures_table_and_summary(db, admin, lab_dir):
    add_trade(admin, symbol="AAPL", status="FAILED", reason=CHAOS, age_s=10)
    add_trade(admin, symbol="MSFT", status="FAILED", reason=TIMEOUT, age_s=20)
    add_trade(admin, symbol="MSFT", status="FILLED", fill_price="1", age_s=20)
    add_trade(admin, symbol="MSFT", status="FILLED", fill_price="1", age_s=30)
    result = invoke("investigate-failures", "--database-url", db.operator_url)
    assert result.exit_code == 0, result.output
    out = result.output
    assert CHAOS in out and TIMEOUT in out
    assert out.index(CHAOS) < out.index(TIMEOUT)  # newest first
    assert "2 failed of 4 trades in the last 1h (50.00%)" in out
    assert "EXCHANGE_CONNECTION_FAILED" in out and "EXCHANGE_TIMEOUT" in out
    assert "first failure" in out


def test_investigate_failures_json_symbol_and_limit(db, admin, lab_dir):
    ids = [add_trade(admin, symbol="NVDA", status="FAILED", reason=CHAOS, age_s=age)
           for age in (5, 15, 25)]
    add_trade(admin, symbol="AAPL", status="FAILED", reason=CHAOS, age_s=5)
    result = invoke("investigate-failures", "--json", "--symbol", "nvda", "--limit", "2",
                    "--since", "10m", "--database-url", db.operator_url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [f["id"] for f in report["failures"]] == ids[:2]
    assert report["summary"]["total"] == 3
    assert report["summary"]["by_symbol"] == {"NVDA": 3}
    assert report["summary"]["window"]["seconds"] == 600


def test_investigate_failures_when_nothing_failed(db, admin, lab_dir):
    add_trade(admin, status="FILLED", fill_price="1", age_s=5)
    add_trade(admin, status="FAILED", reason=CHAOS, age_s=7200)
    result = invoke("investigate-failures", "--database-url", db.operator_url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("no failed trades in the last 1h")


@pytest.mark.parametrize("args, message", [
    (["--since", "soon"], "invalid --since 'soon'"),
    (["--limit", "0"], "--limit"),
])
def test_investigate_failures_bad_flags(db, lab_dir, args, message):
    result = invoke("investigate-failures", *args, "--database-url", db.operator_url)
    assert result.exit_code != 0
    assert message in result.output


# -- db ------------------------------------------------------------------------------

def test_db_migrate_then_status_with_explicit_url(pg, db, lab_dir):
    name = f"tl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url("postgres", pg.password), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg.url("postgres", pg.password, name)
    # keep the session's role passwords (roles are cluster-wide)
    env = {"TRADELAB_APP_DB_PASSWORD": db.app_password,
           "TRADELAB_OPERATOR_DB_PASSWORD": db.operator_password}

    result = invoke("db", "status", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "current:  none" in result.output and "pending:" in result.output

    result = invoke("db", "migrate", "--database-url", url, env=env)
    assert result.exit_code == 0, result.output
    # a new database gets every bundled migration, in order, one line each
    assert result.output.strip() == "\n".join(f"applied {v}" for v, _ in available())
    result = invoke("db", "migrate", "--database-url", url, env=env)
    assert result.output.strip() == f"database is up to date ({latest_version()})"

    result = invoke("db", "status", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert f"current:  {latest_version()}" in result.output and "up to date" in result.output
    assert pg.password not in result.output


def test_lab_flow_with_no_flags_uses_the_lab_secrets(pg, db, lab_dir):
    """migrate with the lab's passwords, then the operator commands need no flags."""
    secrets = lab_dir / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    # The lab's secrets are the session's passwords, so other tests keep working.
    for name, value in (("postgres_password", pg.password),
                        ("app_db_password", db.app_password),
                        ("operator_db_password", db.operator_password)):
        (secrets / name).write_text(value + "\n")
        os.chmod(secrets / name, 0o600)
    result = invoke("config", "set", "ports.postgres", str(pg.port))
    assert result.exit_code == 0, result.output
    with psycopg.connect(pg.url("postgres", pg.password), autocommit=True) as conn:
        try:
            conn.execute('CREATE DATABASE "tradelab"')
        except psycopg.errors.DuplicateDatabase:
            pass

    result = invoke("db", "migrate")
    assert result.exit_code == 0, result.output
    result = invoke("db", "status")
    assert result.exit_code == 0, result.output
    assert "tradelab_operator:***@" in result.output and "up to date" in result.output

    key = f"lab-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.url("postgres", pg.password, "tradelab"), autocommit=True) as c:
        trade_id = add_trade(c, status="FAILED", reason=CHAOS, client_order_id=key)
    result = invoke("find-trade", "--client-order-id", key, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == trade_id
    result = invoke("investigate-failures", "--json", "--since", "5m")
    assert result.exit_code == 0, result.output
    assert trade_id in [f["id"] for f in json.loads(result.output)["failures"]]


def test_db_migrate_wait_retries_until_the_database_starts(lab_dir):
    # not tmp_path: the server's system user must be able to reach the directory
    root = Path(tempfile.mkdtemp(prefix="tradelab-wait-"))
    cluster = PostgresCluster(root / "data", port=free_port())
    cluster.init("wait-pw")
    url = cluster.url("postgres", "wait-pw")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradelab", "db", "migrate", "--wait", "90",
         "--database-url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TRADELAB_APP_DB_PASSWORD": "a",
             "TRADELAB_OPERATOR_DB_PASSWORD": "o"})
    try:
        time.sleep(1.5)  # let it find the database down at least once
        assert proc.poll() is None, proc.communicate()
        cluster.start()
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert out.split()[1::2] == [v for v, _ in available()]
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


# -- config --------------------------------------------------------------------------

def _lab_of_its_own(lab_dir: Path) -> None:
    """A project name nobody runs, so a Docker engine here holds no lab of it."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    (lab_dir / "tradelab.yaml").write_text(yaml.safe_dump(
        {"project": f"tldown-{uuid.uuid4().hex[:8]}"}))


def test_status_of_a_lab_that_is_down_says_so_and_where_it_last_ran(lab_dir):
    _lab_of_its_own(lab_dir)
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["up"], report["runtime"], report["services"]) == (False, None, [])
    text = invoke("status")
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == "lab is down: start it with `tradelab up`"
    assert "missing" not in text.stdout and "http://" not in text.stdout

    (lab_dir / "state").mkdir(exist_ok=True)
    (lab_dir / "state" / "runtime").write_text("local\n")  # as `up` leaves it
    report = json.loads(invoke("status", "--json").stdout)
    assert (report["up"], report["runtime"], report["services"]) == (False, "local", [])
    assert invoke("status").stdout.startswith(
        "lab is down (it last ran on the local runtime): start it with `tradelab up`")


def test_chaos_on_with_the_lab_down_warns_in_one_line(lab_dir):
    _lab_of_its_own(lab_dir)
    result = invoke("chaos", "on")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == ("warning: the lab is down: nothing will see "
                                     "exchange-errors until `tradelab up`")
    assert result.stdout.startswith("chaos on: exchange-errors")
    status = invoke("status")
    assert "chaos: exchange-errors (nothing sees it until `tradelab up`)" in status.stdout
    invoke("chaos", "off")


def test_config_show_set_and_sources(lab_dir):
    result = invoke("config", "set", "ports.api", "8001")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((lab_dir / "tradelab.yaml").read_text()) == {"ports": {"api": 8001}}

    env = {"TRADELAB_PORTS__ENGINE": "9201",
           "TRADELAB_DATABASE_URL": "postgresql://app:s3cret@127.0.0.1:5432/tradelab"}
    result = invoke("config", "show", "--json", env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["ports.api"] == {"value": 8001,
                                  "source": f"file:{lab_dir.resolve() / 'tradelab.yaml'}"}
    assert shown["ports.engine"] == {"value": 9201, "source": "env:TRADELAB_PORTS__ENGINE"}
    assert shown["ports.grafana"] == {"value": 3000, "source": "default"}
    assert shown["database_url"]["value"] == "postgresql://app:***@127.0.0.1:5432/tradelab"
    assert "s3cret" not in result.output
    dsn = {"TRADELAB_DATABASE_URL": "host=127.0.0.1 user=app password=s3cret dbname=tradelab"}
    result = invoke("config", "show", "database_url", env=dsn)
    assert result.exit_code == 0 and "s3cret" not in result.output, result.output

    result = invoke("config", "show", "ports", env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["key", "value", "source"]
    assert all(line.split()[0].startswith("ports.") for line in lines[2:])
    assert any(line.split()[:3] == ["ports.engine", "9201", "env:TRADELAB_PORTS__ENGINE"]
               for line in lines)


def test_config_set_errors_and_env_note(lab_dir):
    result = invoke("config", "set", "ports.nope", "1")
    assert result.exit_code == 1 and "unknown setting 'ports.nope'" in result.output
    result = invoke("config", "set", "ports.api", "8002", env={"TRADELAB_PORTS__API": "9"})
    assert result.exit_code == 0, result.output
    assert "TRADELAB_PORTS__API is set in the environment" in result.output
    result = invoke("config", "show", "nope")
    assert result.exit_code == 1 and "unknown setting 'nope'" in result.output


def test_config_path(lab_dir):
    result = invoke("config", "path")
    assert result.output.strip() == str(lab_dir.resolve() / "tradelab.yaml")
    result = invoke("--lab-dir", str(lab_dir / "other"), "config", "path", "secrets")
    assert result.output.strip() == str(lab_dir.resolve() / "other" / "secrets")


# -- as a real process ------------------------------------------------------------------

def test_version_from_module_and_console_script():
    for module in (True, False):
        result = run("--version", module=module)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"tradelab {__version__}"


def test_help_lists_commands_and_cli_import_stays_light():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("find-trade", "investigate-failures", "db", "config"):
        assert command in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c",
         "import tradelab.cli.main, sys; print(sorted(m for m in sys.modules if m.split('.')[0]"
         " in ('docker','flask','psycopg','locust','gunicorn')))"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


HELP_PROBE = """
import contextlib, io, sys
from typer.main import get_command
from tradelab.cli.main import app
root, out = get_command(app), io.StringIO()
def groups(command, path):
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if getattr(sub, "commands", None) is not None:
            yield from groups(sub, [*path, name])
for path in groups(root, []):
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        app([*path, "--help"], prog_name="tradelab")
print(sorted({m.split(".")[0] for m in sys.modules} & {"rich", "markdown_it"}))
print(out.getvalue())
"""


def test_help_is_plain_fast_and_whole():
    """Every group's --help is click's plain text (rich costs most of the start time, see
    docs/benchmarks.md) and no command summary is cut short with '...'."""
    probe = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert probe.returncode == 0, probe.stderr
    imported, _, helps = probe.stdout.partition("\n")
    assert imported == "[]", "--help imported " + imported
    for group in ("Usage: tradelab [OPTIONS]", "Usage: tradelab chaos", "Usage: tradelab db"):
        assert group in helps
    assert "Start the lab (or bring it up to date); wait until\n" in helps
    assert not [line for line in helps.splitlines()
                if line.endswith("...") and not line.startswith("Usage:")]


def test_operator_commands_in_a_subprocess(db, admin, tmp_path):
    trade_id = add_trade(admin, status="FAILED", reason=CHAOS, client_order_id="sub-1")
    env = {"TRADELAB_HOME": str(tmp_path / "lab"), "TRADELAB_DATABASE_URL": db.operator_url}
    result = run("find-trade", "--id", str(trade_id), "--json", env=env, module=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["client_order_id"] == "sub-1"
    result = run("investigate-failures", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["by_reason"] == {"EXCHANGE_CONNECTION_FAILED": 1}


def test_errors_are_one_line_on_stderr_in_a_subprocess(db, pg, tmp_path):
    lab = {"TRADELAB_HOME": str(tmp_path / "lab")}
    bad_pw = db.operator_url.replace(f":{db.operator_password}@", ":wrong@")
    closed = f"postgresql://tradelab_operator:pw@127.0.0.1:{free_port()}/tradelab"
    cases = [
        (["find-trade", "--id", "999", "--database-url", db.operator_url], "trade 999 not found"),
        (["find-trade", "--database-url", db.operator_url], "give exactly one"),
        (["investigate-failures", "--database-url", bad_pw], "refused the password"),
        (["investigate-failures", "--database-url", closed], "database unreachable"),
        (["find-trade", "--id", "1", "--database-url", closed], "database unreachable"),
        (["db", "migrate", "--database-url", closed], "database unreachable"),
        (["db", "status", "--database-url", bad_pw], "refused the password"),
        (["investigate-failures", "--since", "x", "--database-url", closed], "invalid --since"),
        (["config", "set", "nope", "1"], "unknown setting"),
    ]
    for args, message in cases:
        assert_one_line_error(run(*args, env=lab), message)
    # the wrong password is not echoed back
    assert "wrong" not in run("db", "status", "--database-url", bad_pw, env=lab).stderr


def test_db_migrate_wait_gives_up_with_one_line(tmp_path):
    closed = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/tradelab"
    result = run("db", "migrate", "--wait", "2", "--database-url", closed,
                 env={"TRADELAB_HOME": str(tmp_path / "lab")})
    assert_one_line_error(result, "database unreachable")


def test_settings_error_from_file_is_one_line(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "tradelab.yaml").write_text("ports: {api: many}\n")
    result = run("config", "show", env={"TRADELAB_HOME": str(lab)})
    assert_one_line_error(result, "invalid setting ports.api (file:")
    assert Path(lab / "tradelab.yaml").read_text() == "ports: {api: many}\n"


def test_usage_mistakes_are_one_line_with_exit_2(tmp_path):
    lab = {"TRADELAB_HOME": str(tmp_path / "lab")}
    cases = [
        (["investigate-failures", "--limit", "0"], "Invalid value for '--limit'"),
        (["chaos", "on", "--rate", "x"], "Invalid value for '--rate'"),
        (["no-such-command"], "No such command"),
        (["find-trade", "--no-such-flag"], "No such option"),
    ]
    for args, message in cases:
        result = run(*args, env=lab)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert "--help" in lines[0]
