"""Settings layering (defaults <- file <- env <- flags) and the lab's generated secrets."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
import yaml

from tradelab.errors import TradelabError
from tradelab.lab import SECRET_NAMES, Lab
from tradelab.settings import load_settings, write_setting


@pytest.fixture
def env_lab(lab_dir) -> Lab:
    return Lab.from_flag(lab_dir)


def write_yaml(env_lab: Lab, data: dict) -> None:
    env_lab.root.mkdir(parents=True, exist_ok=True)
    env_lab.config_file.write_text(yaml.safe_dump(data))


# -- layering ----------------------------------------------------------------------

def test_defaults_come_from_the_model(env_lab):
    settings = load_settings(env_lab, env={})
    assert settings.ports.api == 8000
    assert settings.sources["ports.api"] == "default"
    assert settings.sources["images.postgres"] == "default"
    assert set(settings.sources) == set(settings.flat())


def test_each_layer_overrides_the_one_before_and_says_so(env_lab):
    write_yaml(env_lab, {"ports": {"api": 8001, "engine": 9201, "grafana": 3001},
                     "api": {"workers": 3}})
    env = {"TRADELAB_PORTS__ENGINE": "9301", "TRADELAB_PORTS__GRAFANA": "3002"}
    settings = load_settings(env_lab, flags={"ports.grafana": 3003, "api.threads": None}, env=env)

    assert (settings.ports.api, settings.sources["ports.api"]) == (
        8001, f"file:{env_lab.config_file}")
    assert (settings.ports.engine, settings.sources["ports.engine"]) == (
        9301, "env:TRADELAB_PORTS__ENGINE")
    assert (settings.ports.grafana, settings.sources["ports.grafana"]) == (3003, "flag")
    assert (settings.api.workers, settings.sources["api.workers"]) == (
        3, f"file:{env_lab.config_file}")
    # a flag left unset (None) does not hide the value below it
    assert (settings.api.threads, settings.sources["api.threads"]) == (4, "default")
    # siblings of an overridden key keep their defaults
    assert (settings.ports.loki, settings.sources["ports.loki"]) == (3100, "default")


def test_env_values_text_as_is_numbers_and_lists_as_yaml(env_lab):
    env = {
        "TRADELAB_DATABASE_URL": "postgresql://u:*p#w: x@h:5/db",
        "TRADELAB_SYMBOLS": "[AAPL, IBM]",
        "TRADELAB_API__DB_TIMEOUT_S": "0.5",
        "TRADELAB_IMAGES__POSTGRES": "mirror.local/postgres:16",
        "TRADELAB_PROJECT": "123",
        "TRADELAB_HOME": "/not/a/setting",
        "TRADELAB_APP_DB_PASSWORD": "not-a-setting-either",
    }
    settings = load_settings(env_lab, env=env)
    assert settings.database_url == "postgresql://u:*p#w: x@h:5/db"
    assert settings.symbols == ["AAPL", "IBM"]
    assert settings.api.db_timeout_s == 0.5
    assert settings.images["postgres"] == "mirror.local/postgres:16"
    assert settings.images["grafana"] == "grafana/grafana:11.4.0"  # other images kept
    assert settings.project == "123"
    assert settings.sources["images.postgres"] == "env:TRADELAB_IMAGES__POSTGRES"


@pytest.mark.parametrize("env, message", [
    ({"TRADELAB_PORTS__API": "not-a-port"}, "ports.api (env:TRADELAB_PORTS__API)"),
    ({"TRADELAB_PORTS__API": "*alias"}, "ports.api (env:TRADELAB_PORTS__API)"),
    ({"TRADELAB_API__WORKERS": "0"}, "api.workers (env:TRADELAB_API__WORKERS)"),
])
def test_bad_env_values_are_one_line_errors_naming_the_variable(env_lab, env, message):
    with pytest.raises(TradelabError) as info:
        load_settings(env_lab, env=env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    ("ports: {api: 99999}\n", "ports.api (file:"),
    ("portz: {api: 1}\n", "unknown setting portz (file:"),
    ("ports: [1, 2\n", "is not valid YAML"),
    ("- a list\n", "must hold a mapping"),
    ("images: {grafna: my/grafana}\n", "images (file:"),
    ("images: {grafna: my/grafana}\n", "unknown key 'grafna'"),
    ("memory: {api: lots}\n", "'lots' is not a memory size"),
    ("bind_address: not-an-ip\n", "bind_address (file:"),
])
def test_bad_settings_file_is_a_one_line_error(env_lab, content, message):
    env_lab.root.mkdir(parents=True)
    env_lab.config_file.write_text(content)
    with pytest.raises(TradelabError) as info:
        load_settings(env_lab, env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_write_setting_keeps_other_values_and_types(env_lab):
    write_yaml(env_lab, {"ports": {"engine": 9201}, "symbols": ["AAPL"]})
    write_setting(env_lab, "ports.api", "8001")
    write_setting(env_lab, "database_url", "postgresql://u:p@h/db")
    write_setting(env_lab, "images.postgres", "mirror/postgres:16")
    data = yaml.safe_load(env_lab.config_file.read_text())
    assert data == {"ports": {"engine": 9201, "api": 8001}, "symbols": ["AAPL"],
                    "database_url": "postgresql://u:p@h/db",
                    "images": {"postgres": "mirror/postgres:16"}}
    settings = load_settings(env_lab, env={})
    assert settings.ports.api == 8001 and settings.images["loki"] == "grafana/loki:3.3.2"


@pytest.mark.parametrize("key, value, message", [
    ("ports.apii", "1", "unknown setting 'ports.apii'"),
    ("ports.api", "99999", "invalid setting ports.api"),
    ("ports.api", "[1", "invalid setting ports.api"),
    ("runtime", "kubernetes", "invalid setting runtime"),
])
def test_write_setting_refuses_bad_keys_and_values_and_keeps_the_file(env_lab, key, value, message):
    write_yaml(env_lab, {"ports": {"api": 8001}})
    before = env_lab.config_file.read_text()
    with pytest.raises(TradelabError, match=message):
        write_setting(env_lab, key, value)
    assert env_lab.config_file.read_text() == before


# -- lab directory -----------------------------------------------------------------

def test_lab_dir_from_flag_then_env_then_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADELAB_HOME", str(tmp_path / "from-env"))
    assert Lab.from_flag(tmp_path / "from-flag").root == tmp_path / "from-flag"
    assert Lab.from_flag(None).root == tmp_path / "from-env"
    monkeypatch.delenv("TRADELAB_HOME")
    import platformdirs

    assert Lab.from_flag(None).root == Path(
        platformdirs.user_data_dir("tradelab", appauthor=False))


# -- secrets -----------------------------------------------------------------------

def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secrets_are_generated_once_private_and_distinct(env_lab):
    old = os.umask(0o002)  # a permissive umask must not widen the modes
    try:
        files = env_lab.ensure_secrets()
    finally:
        os.umask(old)
    assert set(files) == set(SECRET_NAMES)
    assert mode(env_lab.secrets_dir) == 0o700
    values = {}
    for name, path in files.items():
        assert mode(path) == 0o600, name
        values[name] = path.read_text().strip()
        assert len(values[name]) >= 24
    assert len(set(values.values())) == len(values)
    # generated once: the same values from the same and from a fresh Lab object
    assert {n: env_lab.secret(n) for n in SECRET_NAMES} == values
    assert {n: Lab.from_flag(env_lab.root).secret(n) for n in SECRET_NAMES} == values
    assert not [p for p in env_lab.secrets_dir.iterdir() if p.name.startswith(".")]


def test_secret_dir_made_too_open_is_tightened(env_lab):
    env_lab.secrets_dir.mkdir(parents=True, mode=0o755)
    os.chmod(env_lab.secrets_dir, 0o755)
    env_lab.secret("grafana_admin_password")
    assert mode(env_lab.secrets_dir) == 0o700


def test_a_given_secret_is_private_even_over_a_leftover_temp_file(env_lab):
    """A temporary file left (or planted) beside a secret, world-readable, is never
    reused: the secret written next to it is 0600 from its first byte."""
    env_lab.ensure()
    leftover = env_lab.secrets_dir / ".slack_webhook_url.tmp"  # the name the old code reused
    leftover.write_text("planted\n")
    os.chmod(leftover, 0o644)
    old = os.umask(0)
    try:
        path = env_lab.write_secret("slack_webhook_url", "https://hooks.slack.com/services/T/B/x")
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert path.read_text().strip() == "https://hooks.slack.com/services/T/B/x"
    assert leftover.read_text() == "planted\n"  # someone else's file: left as it was


def test_atomic_write_gives_exactly_the_mode_asked_whatever_the_umask(tmp_path):
    from tradelab.files import write_atomic

    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "rendered.yml", "a: 1\n", mode=0o644)
    finally:
        os.umask(old)
    assert mode(tmp_path / "rendered.yml") == 0o644
    write_atomic(tmp_path / "rendered.yml", b"a: 2\n", mode=0o600)
    assert mode(tmp_path / "rendered.yml") == 0o600
    assert (tmp_path / "rendered.yml").read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rendered.yml"]


def _secret_in_child(root, queue):
    queue.put(Lab(root).secret("app_db_password"))


def test_concurrent_first_use_agrees_on_one_secret(env_lab):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_secret_in_child, args=(env_lab.root, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    values = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert len(set(values)) == 1 and values[0]
    assert env_lab.secret("app_db_password") == values[0]


def test_image_and_memory_overrides_of_known_services_are_kept(env_lab):
    env_lab.root.mkdir(parents=True)
    env_lab.config_file.write_text("images: {postgres: mirror/postgres:16}\nmemory: {api: 1g}\n"
                               "bind_address: '::1'\n")
    settings = load_settings(env_lab, env={})
    assert settings.images["postgres"] == "mirror/postgres:16"
    assert settings.images["grafana"].startswith("grafana/")  # the others keep their pins
    assert settings.memory["api"] == "1g"
    assert settings.bind_address == "::1"
