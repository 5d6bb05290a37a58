"""Rendering without Docker: schema-valid compose, promtool-valid Prometheus, safe defaults."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from typer.testing import CliRunner

from tradelab.cli.main import app
from tradelab.errors import TradelabError
from tradelab.lab import SECRET_NAMES, Lab
from tradelab.render import environment, render, render_text
from tradelab.settings import load_settings
from tradelab.stack import build_stack


@pytest.fixture
def empty_lab(tmp_path) -> Lab:
    return Lab(tmp_path / "lab")


def rendered(empty_lab, out, runtime="docker", env=None, **flags) -> Path:
    settings = load_settings(empty_lab, flags=flags, env=env or {})
    render(settings, empty_lab, out=out, runtime=runtime)
    return out


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def compose(out: Path) -> dict:
    return yaml.safe_load((out / "docker-compose.yml").read_text())


def test_compose_file_passes_the_compose_spec_schema(empty_lab, tmp_path):
    out = rendered(empty_lab, tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(out / "docker-compose.yml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_pictures_the_stack(empty_lab, tmp_path):
    out = rendered(empty_lab, tmp_path / "out", project="lab2")
    doc = compose(out)
    stack = build_stack(load_settings(empty_lab, flags={"project": "lab2"}, env={}), empty_lab)
    assert doc["name"] == "lab2"
    assert set(doc["services"]) == set(stack.services) | {"secrets-init"}
    readers = {n for n, svc in stack.services.items() if svc.secrets}
    assert set(doc["volumes"]) == set(stack.volumes) | {f"{n}-secrets" for n in readers}
    assert doc["services"]["api"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "secrets-init": {"condition": "service_completed_successfully"}}
    assert doc["services"]["api"]["command"] == list(stack.services["api"].command)
    assert "secrets" not in doc  # compose would bind-mount them 0600, unreadable by 10001
    # Every rendered config folder a service mounts exists in the output.
    for svc in doc["services"].values():
        for vol in svc.get("volumes", []):
            if vol["source"].startswith("./"):
                assert (out / vol["source"]).is_dir(), vol


def test_prometheus_config_passes_promtool_in_both_runtimes(empty_lab, tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    for runtime in ("docker", "local"):
        out = rendered(empty_lab, tmp_path / runtime, runtime=runtime)
        config = str(out / "prometheus/prometheus.yml")
        result = subprocess.run([promtool, "check", "config", config],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "rule files found" in result.stdout + result.stderr


def test_local_render_targets_loopback_and_has_no_compose_file(empty_lab, tmp_path):
    out = rendered(empty_lab, tmp_path / "out", runtime="local",
                   env={"TRADELAB_PORTS__API": "18000"})
    assert not (out / "docker-compose.yml").exists()
    prom = yaml.safe_load((out / "prometheus/prometheus.yml").read_text())
    targets = {c["job_name"]: c["static_configs"][0]["targets"][0] for c in prom["scrape_configs"]}
    assert targets["api"] == "127.0.0.1:18000"
    assert all(t.startswith("127.0.0.1:") for t in targets.values())
    docker = rendered(empty_lab, tmp_path / "docker")
    prom = yaml.safe_load((docker / "prometheus/prometheus.yml").read_text())
    assert {c["job_name"]: c["static_configs"][0]["targets"][0]
            for c in prom["scrape_configs"]}["engine"] == "engine:9101"


def test_published_ports_bind_loopback_unless_the_setting_says_otherwise(empty_lab, tmp_path):
    doc = compose(rendered(empty_lab, tmp_path / "a"))
    ports = [p for s in doc["services"].values() for p in s.get("ports", [])]
    assert len(ports) >= 7
    assert {p["host_ip"] for p in ports} == {"127.0.0.1"}
    doc = compose(rendered(empty_lab, tmp_path / "b", bind_address="0.0.0.0"))
    assert {p["host_ip"] for s in doc["services"].values() for p in s.get("ports", [])} == {
        "0.0.0.0"}


@pytest.mark.parametrize("agent", ["promtail", "alloy"])
def test_every_container_drops_what_it_does_not_need(empty_lab, tmp_path, agent):
    """The log agent (root: Docker's log files are root's 0640) holds no capability, a
    read-only root and the log folder read-only; every service drops all capabilities
    but what its image's entrypoint needs (postgres: give PGDATA away, become postgres)."""
    doc = compose(rendered(empty_lab, tmp_path / agent, log_agent=agent))
    services = {n: s for n, s in doc["services"].items() if n != "secrets-init"}
    for name, svc in services.items():
        assert svc["cap_drop"] == ["ALL"], name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
    logs = services[agent]
    assert "cap_add" not in logs and "user" not in logs and logs["read_only"] is True
    (folder,) = [v for v in logs["volumes"] if v["target"] == "/var/lib/docker/containers"]
    assert folder["read_only"] is True
    assert services["prometheus"]["read_only"] is True
    assert set(services["postgres"]["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER",
                                                    "SETGID", "SETUID"}
    assert not [n for n, s in services.items() if n != "postgres" and "cap_add" in s]
    # A read-only root cannot take the secrets the Docker runtime copies into it.
    stack = build_stack(load_settings(empty_lab, env={}, flags={"log_agent": agent}),
                        empty_lab, "docker")
    assert not [n for n, svc in stack.services.items() if svc.read_only and svc.secrets]


def test_no_docker_socket_and_no_default_passwords_in_the_rendered_tree(empty_lab, tmp_path):
    values = [empty_lab.secret(name) for name in SECRET_NAMES]  # a lab with its secrets made
    for runtime in ("docker", "local"):
        out = rendered(empty_lab, tmp_path / runtime, runtime=runtime)
        for rel, data in tree(out).items():
            text = data.decode(errors="replace")
            assert not any(v in text for v in values), f"a secret value is in {rel}"
            if rel.startswith("app-image/"):  # the package's source, not a config: its
                continue  # docstrings show example URLs (the image runs no socket either)
            assert "docker.sock" not in text, rel
            for pattern in (r"(?i)admin[:/]admin", r"(?i)password:\s*(postgres|admin|secret)\b",
                            r"POSTGRES_PASSWORD\s*[:=]", r"GF_SECURITY_ADMIN_PASSWORD\s*[:=]",
                            r"postgres(ql)?://[^/\s]*:[^@/\s]+@"):
                assert not re.search(pattern, text), (rel, pattern)
    env = compose(tmp_path / "docker")["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"


def test_image_overrides_reach_compose(empty_lab, tmp_path):
    empty_lab.root.mkdir(parents=True)
    empty_lab.config_file.write_text("images:\n  grafana: mirror.example/grafana:11\n")
    doc = compose(rendered(empty_lab, tmp_path / "out",
                           env={"TRADELAB_IMAGES__POSTGRES": "mirror.example/postgres:16"}))
    assert doc["services"]["postgres"]["image"] == "mirror.example/postgres:16"
    assert doc["services"]["grafana"]["image"] == "mirror.example/grafana:11"
    assert doc["services"]["prometheus"]["image"].startswith("prom/prometheus:v")


def test_rendering_is_deterministic(empty_lab, tmp_path):
    first = tree(rendered(empty_lab, tmp_path / "a"))
    second = tree(rendered(empty_lab, tmp_path / "b"))
    assert first == second
    again = tree(rendered(empty_lab, tmp_path / "a"))
    assert again == first


def test_stale_files_are_removed_and_foreign_files_kept(empty_lab, tmp_path):
    out = rendered(empty_lab, tmp_path / "out")
    assert (out / "promtail/promtail.yml").is_file()
    (out / "notes.txt").write_text("mine")
    rendered(empty_lab, out, log_agent="alloy")
    assert not (out / "promtail").exists()
    assert (out / "alloy/config.alloy").is_file()
    assert (out / "notes.txt").read_text() == "mine"
    assert "promtail" not in compose(out)["services"]


def test_a_planted_manifest_deletes_nothing_the_render_did_not_write(empty_lab, tmp_path):
    import hashlib

    out = rendered(empty_lab, tmp_path / "out")
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {name: outside / name for name in ("absolute", "dotdot", "via-link", "tmp")}
    for path in victims.values():
        path.write_text("keep me")
    (out / "link").symlink_to(outside)
    (out / "edited.yml").write_text("the user's own file")
    listed = [str(victims["absolute"]), "../outside/dotdot", "link/via-link",
              "promtail/../../outside/dotdot", "edited.yml"]
    digest = hashlib.sha256(b"keep me").hexdigest()
    (out / ".tradelab-rendered").write_text(
        "".join(f"{digest} {rel}\n" for rel in listed) + "".join(f"{rel}\n" for rel in listed))
    # A link planted where the render writes its temporary file is not written through.
    (out / "prometheus" / ".prometheus.yml.tmp").symlink_to(victims["tmp"])
    (out / "prometheus" / "prometheus.yml").write_text("changed, so rewritten")

    rendered(empty_lab, out)
    assert all(path.read_text() == "keep me" for path in victims.values())
    assert (out / "edited.yml").read_text() == "the user's own file"
    assert "scrape_configs" in (out / "prometheus" / "prometheus.yml").read_text()
    # The planted link is not the render's to remove (tradelab.files never reuses a name).
    assert not [p for p in (out / "prometheus").iterdir()
                if p.name.endswith(".tmp") and not p.is_symlink()]


def test_credentials_a_rendered_file_must_hold_inline_make_it_private(empty_lab, tmp_path):
    """Local runtime: Debian's Alertmanager 0.25 has no url_file, so the webhook URL is
    inline and alertmanager.yml is 0600 (amtool still accepts it); a user-set database
    URL with a password makes the compose file that carries it 0600 too."""
    hook = "http://127.0.0.1:9/hook?token=s3cret"
    out = rendered(empty_lab, tmp_path / "local", runtime="local",
                   env={"TRADELAB_ALERTING__WEBHOOK_URL": hook})
    am = out / "alertmanager" / "alertmanager.yml"
    assert hook in am.read_text()
    assert am.stat().st_mode & 0o777 == 0o600
    assert (out / "prometheus" / "prometheus.yml").stat().st_mode & 0o777 == 0o644
    if shutil.which("amtool"):
        check = subprocess.run(["amtool", "check-config", str(am)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    # A user-set database URL with a password: like the lab's own, the password is a
    # secret file; neither the containers' environment nor the compose file holds it.
    url = "postgresql://me:pw%2Fs3cret@db.example:5432/trades"
    env = {"TRADELAB_DATABASE_URL": url}
    out = rendered(empty_lab, tmp_path / "docker", env=env)
    assert not [p for p in out.rglob("*") if p.is_file() and "s3cret" in p.read_text()]
    stack = build_stack(load_settings(empty_lab, env=env), empty_lab, "docker")
    for name in ("api", "engine"):
        svc = stack.services[name]
        assert not any("s3cret" in v for v in svc.environment.values()), svc.environment
        (secret,) = svc.secrets
        assert secret.source.read_text().strip() == "pw/s3cret"
        assert secret.source.stat().st_mode & 0o777 == 0o600
        seen = load_settings(empty_lab, env={**svc.environment,
                                       "TRADELAB_DATABASE_PASSWORD_FILE": str(secret.source)})
        assert seen.database_url == url  # what the service connects with


@pytest.mark.parametrize("url", [
    "postgresql://me@db.example:5432/trades?sslmode=disable&password=pw%2Fs3cret",
    "postgresql://db.example/trades?password=pw%2Fs3cret&user=me",
    "host=db.example user=me password='pw/s3cret' dbname=trades",
], ids=["url-parameter", "url-parameter-no-user", "key-value"])
def test_a_database_password_given_as_a_parameter_is_a_secret_file_too(empty_lab, tmp_path,
                                                                       url):
    """libpq also takes the password as `?password=` or `password=` (key=value): it is
    split out like `user:password@`; the services connect with the same parameters."""
    from psycopg.conninfo import conninfo_to_dict

    from tradelab.runtimes.local_programs import _environment

    env = {"TRADELAB_DATABASE_URL": url}
    out = rendered(empty_lab, tmp_path / "docker", env=env)
    assert not [p for p in out.rglob("*") if p.is_file() and "s3cret" in p.read_text()]
    for runtime in ("docker", "local"):
        stack = build_stack(load_settings(empty_lab, env=env), empty_lab, runtime)
        for name in ("api", "engine"):
            svc = stack.services[name]
            assert not any("s3cret" in v for v in svc.environment.values()), svc.environment
            (secret,) = svc.secrets
            assert secret.source.read_text().strip() == "pw/s3cret"
            assert secret.source.stat().st_mode & 0o777 == 0o600
            seen = load_settings(empty_lab, env={
                **svc.environment, "TRADELAB_DATABASE_PASSWORD_FILE": str(secret.source)})
            assert conninfo_to_dict(seen.database_url) == conninfo_to_dict(url)
            if runtime == "local":  # a local process gets the whole URL back
                local = _environment(svc)["TRADELAB_DATABASE_URL"]
                assert conninfo_to_dict(local) == conninfo_to_dict(url)


def test_default_output_is_the_labs_rendered_dir(empty_lab):
    render(load_settings(empty_lab, env={}), empty_lab)
    assert (empty_lab.rendered_dir / "docker-compose.yml").is_file()
    assert (empty_lab.rendered_dir / "grafana/provisioning/datasources/datasources.yml").is_file()


def test_local_and_docker_renders_keep_out_of_each_others_way(empty_lab):
    """A running local Prometheus reloads <lab>/rendered/local: a Docker render (container
    host names as targets) must not rewrite it, nor the other way round."""
    settings = load_settings(empty_lab, env={})
    render(settings, empty_lab, runtime="local")
    local = (empty_lab.rendered_dir / "local/prometheus/prometheus.yml").read_text()
    render(settings, empty_lab)
    assert (empty_lab.rendered_dir / "local/prometheus/prometheus.yml").read_text() == local
    assert "127.0.0.1:" in local
    assert "127.0.0.1:" not in (empty_lab.rendered_dir / "prometheus/prometheus.yml").read_text()
    assert (empty_lab.rendered_dir / "docker-compose.yml").is_file()
    assert not (empty_lab.rendered_dir / "local/docker-compose.yml").exists()


def test_a_missing_value_is_a_one_line_error(empty_lab):
    env = environment(jinja2.DictLoader({
        "broken.yml": "port: {{ settings.ports.nope }}\n",
        "typo.yml": "x: {{ setings.project }}\n",
    }))
    context = {"settings": load_settings(empty_lab, env={}), "stack": None, "lab": empty_lab}
    with pytest.raises(TradelabError) as err:
        render_text(env, "broken.yml", context)
    assert str(err.value) == "missing configuration value: nope in broken.yml"
    with pytest.raises(TradelabError, match="^missing configuration value: setings in typo.yml$"):
        render_text(env, "typo.yml", context)


def test_json_templates_are_copied_verbatim(empty_lab, tmp_path):
    out = rendered(empty_lab, tmp_path / "out")
    source = Path(__file__).parents[1] / "src/tradelab/templates"
    for path in source.rglob("*.json"):
        rel = path.relative_to(source)
        assert (out / rel).read_bytes() == path.read_bytes()


def test_selected_stack_renders_only_its_services(empty_lab, tmp_path):
    settings = load_settings(empty_lab, env={})
    stack = build_stack(settings, empty_lab)
    small = stack.subset(stack.select(without=["grafana", "loki", "promtail"]))
    render(settings, empty_lab, out=tmp_path / "out", stack=small)
    out = tmp_path / "out"
    assert not (out / "grafana").exists() and not (out / "promtail").exists()
    prom = yaml.safe_load((out / "prometheus/prometheus.yml").read_text())
    jobs = {c["job_name"] for c in prom["scrape_configs"]}
    assert {"api", "engine", "prometheus"} <= jobs and not jobs & {"grafana", "loki", "promtail"}


def test_render_command(empty_lab, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--lab-dir", str(empty_lab.root), "render", "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "rendered" in result.output
    init = compose(tmp_path / "out")["services"]["secrets-init"]
    folder = next(v["source"] for v in init["volumes"] if v["target"] == "/lab-secrets")
    assert folder == str(empty_lab.secrets_dir)
    for name in SECRET_NAMES:  # compose can start it: the files it copies exist
        assert (empty_lab.secrets_dir / name).is_file()
    result = runner.invoke(app, ["--lab-dir", str(empty_lab.root), "render", "--runtime", "local",
                                 "--out", str(tmp_path / "local")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "local/docker-compose.yml").exists()
    result = runner.invoke(app, ["--lab-dir", str(empty_lab.root), "render", "--runtime", "k8s"])
    assert result.exit_code != 0


def test_locust_containers_get_the_locustfiles_and_a_vendored_prometheus_client(empty_lab,
                                                                                tmp_path):
    out = rendered(empty_lab, tmp_path / "docker")
    files = tree(out)
    # Only the locustfiles in locust/: `locust -f <folder>` walks the whole tree.
    assert all("/" not in name.removeprefix("locust/") for name in files
               if name.startswith("locust/"))
    assert "locust/trader.py" in files and "locust/_hooks.py" in files
    vendor = out / "locust-vendor"
    assert any(p.name == "LICENSE" for p in vendor.rglob("*.dist-info/**/*")), files.keys()
    assert not list(vendor.rglob("*.pyc"))
    # The copy imports on its own (pure Python): what the master's /metrics needs.
    probe = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(vendor)!r}); "
         "import prometheus_client; print(prometheus_client.__file__)"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(str(vendor)), probe.stdout
    local = rendered(empty_lab, tmp_path / "local", runtime="local")
    assert not (local / "locust-vendor").exists()  # local Locust uses this environment's


def test_compose_copies_secrets_per_reader_with_the_runtimes_owners(empty_lab, tmp_path):
    """Compose ignores a file secret's uid/mode outside swarm, so secrets-init copies each
    reader's secrets into its own volume: 0400 for the app's numeric user, 0444 for an
    image's own user, like `tradelab up`; a reader sees only its own secrets."""
    settings = load_settings(empty_lab, env={})
    stack = build_stack(settings, empty_lab)
    doc = compose(rendered(empty_lab, tmp_path / "out"))
    init = doc["services"]["secrets-init"]
    assert init["network_mode"] == "none" and init["user"] == "0:0"
    assert init["image"] == doc["services"]["api"]["image"]
    script = init["command"][0]
    for name, svc in stack.services.items():
        mounts = doc["services"][name].get("volumes", [])
        secret_mounts = [m for m in mounts if m["target"] == "/run/secrets"]
        if not svc.secrets:
            assert not secret_mounts and "secrets-init" not in doc["services"][name].get(
                "depends_on", {})
            continue
        assert secret_mounts == [{"type": "volume", "source": f"{name}-secrets",
                                  "target": "/run/secrets", "read_only": True}]
        copies = re.findall(rf"^install (.*) /lab-secrets/(\S+) /copies/{name}/(\S+)$", script,
                            re.MULTILINE)
        assert sorted(c[1] for c in copies) == sorted(s.name for s in svc.secrets)
        owner = "-o 10001 -g 10001 -m 0400" if svc.user == "10001:10001" else "-o 0 -g 0 -m 0444"
        assert {c[0] for c in copies} == {owner}, name
    assert re.findall(r"^install .* /copies/api/(\S+)$", script, re.MULTILINE) == [
        "app_db_password"]


def test_compose_builds_the_app_image_tradelab_up_builds(empty_lab, tmp_path):
    from tradelab.app_image import build_context_files, image_label
    from tradelab.const import LABEL_CONTEXT_HASH

    settings = load_settings(empty_lab, env={}, flags={"build": {"base_image": "example/py:3"}})
    out = tmp_path / "out"
    render(settings, empty_lab, out=out)
    doc = compose(out)
    files = build_context_files()
    assert tree(out / "app-image") == {rel: data for rel, data in files.items()}
    for name in ("migrate", "api", "engine", "secrets-init"):
        build = doc["services"][name]["build"]
        assert build["context"] == "./app-image"
        assert build["args"] == {"BASE_IMAGE": "example/py:3"}
        # The label `tradelab up` checks: an image compose built is not built again.
        assert build["labels"] == {LABEL_CONTEXT_HASH: image_label(files, "example/py:3")}
    assert "build" not in doc["services"]["postgres"]
    assert "app-image/pkg/tradelab/__init__.py" in tree(out)


def test_render_prepares_the_folder_locust_writes_its_ledgers_into(empty_lab, tmp_path):
    doc = compose(rendered(empty_lab, tmp_path / "out"))
    ledger = next(v["source"] for v in doc["services"]["locust-master"]["volumes"]
                  if v["target"] == "/var/lib/tradelab/load")
    # The Locust image runs as its own uid: compose would make the folder root's 0755.
    assert Path(ledger).is_dir() and Path(ledger).stat().st_mode & 0o1777 == 0o1777


def test_render_without_services_writes_the_lab_up_would_run(empty_lab, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["--lab-dir", str(empty_lab.root), "render", "--out", str(out),
                                 "--without", "grafana,loki,promtail"])
    assert result.exit_code == 0, result.output
    doc = compose(out)
    assert not {"grafana", "loki", "promtail"} & set(doc["services"])
    assert not {"grafana-data", "grafana-secrets", "loki-data"} & set(doc["volumes"])
    assert not (out / "grafana").exists()
    result = runner.invoke(app, ["--lab-dir", str(empty_lab.root), "render", "--out", str(out),
                                 "--without", "postgres"])
    assert result.exit_code == 1 and "postgres is needed by" in result.output
