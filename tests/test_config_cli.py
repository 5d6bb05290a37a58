"""`tradelab config set/unset`: the settings file stays private and no secret is echoed."""

from __future__ import annotations

import os
import stat

import yaml
from typer.testing import CliRunner

from tradelab.cli.main import app

SLACK = "https://hooks.slack.com/services/T000/B000/s3cretToken"
DB_URL = "postgresql://app:s3cretPw@127.0.0.1:5432/tradelab"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_set_writes_a_private_file_and_never_echoes_a_credential(lab_dir):
    old = os.umask(0o022)  # the usual default: new files world-readable
    try:
        for key, value in (("database_url", DB_URL), ("alerting.slack_webhook_url", SLACK),
                           ("alerting.webhook_url", "https://hooks.example/t/s3cretPath")):
            result = invoke("config", "set", key, value)
            assert result.exit_code == 0, result.output
            assert "s3cret" not in result.output, result.output
            mode = stat.S_IMODE((lab_dir / "tradelab.yaml").stat().st_mode)
            assert mode == 0o600, oct(mode)
    finally:
        os.umask(old)
    assert "set database_url = postgresql://app:***@127.0.0.1:5432/tradelab" in \
        invoke("config", "set", "database_url", DB_URL).output
    shown = invoke("config", "show")
    assert shown.exit_code == 0 and "s3cret" not in shown.output, shown.output
    assert yaml.safe_load((lab_dir / "tradelab.yaml").read_text())["database_url"] == DB_URL


def test_a_world_readable_file_becomes_private_on_the_next_set(lab_dir):
    lab_dir.mkdir(parents=True)
    path = lab_dir / "tradelab.yaml"
    path.write_text(f"database_url: {DB_URL}\n")
    path.chmod(0o644)
    assert invoke("config", "set", "ports.api", "8001").exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == {"database_url": DB_URL, "ports": {"api": 8001}}


def test_unset_goes_back_to_the_default_and_keeps_the_rest(lab_dir):
    for key, value in (("ports.api", "8001"), ("ports.engine", "9201"), ("api.workers", "3")):
        assert invoke("config", "set", key, value).exit_code == 0
    result = invoke("config", "unset", "ports.api")
    assert result.exit_code == 0, result.output
    assert "back to the default (8000)" in result.output
    assert yaml.safe_load((lab_dir / "tradelab.yaml").read_text()) == {
        "ports": {"engine": 9201}, "api": {"workers": 3}}
    shown = invoke("config", "show", "ports.api", "--json")
    assert '"source": "default"' in shown.output and '"value": 8000' in shown.output

    result = invoke("config", "unset", "ports.api")
    assert result.exit_code == 0 and "already has the default (8000)" in result.output
    assert invoke("config", "unset", "ports.engine").exit_code == 0
    assert yaml.safe_load((lab_dir / "tradelab.yaml").read_text()) == {"api": {"workers": 3}}
    assert invoke("config", "unset", "api").exit_code == 0  # a whole group
    assert yaml.safe_load((lab_dir / "tradelab.yaml").read_text()) == {}


def test_unset_of_an_unknown_key_is_one_line(lab_dir):
    result = invoke("config", "unset", "ports.nope")
    assert result.exit_code == 1
    assert result.stderr == "error: unknown setting 'ports.nope': `tradelab config show` " \
        "lists them\n"
