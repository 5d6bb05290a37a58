"""The Stack model: services from settings, dependencies, selection, addresses, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradelab.errors import TradelabError
from tradelab.lab import Lab
from tradelab.settings import load_settings
from tradelab.stack import APP_IMAGE, build_stack

SERVICES = ["postgres", "migrate", "api", "engine", "prometheus", "alertmanager", "grafana",
            "loki", "promtail", "locust-master", "locust-worker"]


@pytest.fixture
def empty_lab(tmp_path) -> Lab:
    return Lab(tmp_path / "lab")


def stack_for(empty_lab, runtime="docker", env=None, **flags):
    return build_stack(load_settings(empty_lab, flags=flags, env=env or {}), empty_lab, runtime)


def test_every_service_in_dependency_order(empty_lab):
    stack = stack_for(empty_lab)
    assert sorted(stack.services) == sorted(SERVICES)
    order = stack.start_order()
    for name, svc in stack.services.items():
        for dep in svc.depends_on:
            assert order.index(dep.service) < order.index(name), (name, dep)
    api_deps = {d.service: d.condition for d in stack.services["api"].depends_on}
    assert api_deps == {"migrate": "service_completed_successfully"}
    assert {d.service: d.condition for d in stack.services["migrate"].depends_on} == {
        "postgres": "service_healthy"}
    assert stack.services["migrate"].one_shot and stack.services["migrate"].restart == "no"


def test_log_agent_setting_picks_promtail_or_alloy(empty_lab):
    stack = stack_for(empty_lab, log_agent="alloy")
    assert "alloy" in stack.services and "promtail" not in stack.services
    with pytest.raises(TradelabError, match="promtail is not part of this stack"):
        stack.select(without=["promtail"])


def test_app_services_run_the_app_image_as_non_root_with_the_documented_commands(empty_lab):
    stack = stack_for(empty_lab)
    api, engine, migrate = (stack.services[n] for n in ("api", "engine", "migrate"))
    for svc in (api, engine, migrate):
        assert svc.image == APP_IMAGE and svc.app
        assert svc.user and not svc.user.startswith("0") and svc.user != "root"
        assert svc.environment["TRADELAB_CHAOS_FILE"].startswith("/")
        assert any(m.target in svc.environment["TRADELAB_CHAOS_FILE"] for m in svc.mounts)
    assert api.argv == ("tradelab", "serve", "api", "--bind", "0.0.0.0:8000")
    assert engine.argv == ("tradelab", "serve", "engine", "--metrics-bind", "0.0.0.0:9101")
    assert migrate.argv == ("tradelab", "db", "migrate", "--wait", "60")


def test_secrets_reach_services_as_files_never_as_values(empty_lab):
    values = {empty_lab.secret(name) for name in
              ("postgres_password", "app_db_password", "operator_db_password",
               "grafana_admin_password")}
    for runtime in ("docker", "local"):
        stack = stack_for(empty_lab, runtime)
        text = repr([svc.spec() for svc in stack.services.values()])
        assert not any(v in text for v in values)
    stack = stack_for(empty_lab)
    pg = stack.services["postgres"]
    assert pg.environment["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert [s.source for s in pg.secrets] == [empty_lab.secret_path("postgres_password")]
    grafana = stack.services["grafana"]
    assert grafana.environment["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")
    api = stack.services["api"]
    assert api.environment["TRADELAB_DATABASE_URL"] == (
        "postgresql://tradelab_app@postgres:5432/tradelab")
    assert api.environment["TRADELAB_DATABASE_PASSWORD_FILE"] == "/run/secrets/app_db_password"


def test_a_container_builds_its_database_url_from_the_password_file(empty_lab, tmp_path):
    """What api/engine/migrate do with the Stack's environment (settings + Lab.secret)."""
    pw = tmp_path / "pw"
    pw.write_text("s3cr@t/x\n")
    env = stack_for(empty_lab).services["migrate"].environment
    env = {**env, "TRADELAB_DATABASE_PASSWORD_FILE": str(pw),
           "TRADELAB_APP_DB_PASSWORD_FILE": str(pw)}
    settings = load_settings(None, env=env)
    assert settings.database_url == "postgresql://postgres:s3cr%40t%2Fx@postgres:5432/tradelab"
    import os

    old = dict(os.environ)
    try:
        os.environ["TRADELAB_APP_DB_PASSWORD_FILE"] = str(pw)
        assert Lab(tmp_path / "elsewhere").secret("app_db_password") == "s3cr@t/x"
        assert not (tmp_path / "elsewhere").exists()  # read, never generated
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_no_docker_socket_and_loopback_ports_by_default(empty_lab):
    stack = stack_for(empty_lab)
    for svc in stack.services.values():
        assert not any("docker.sock" in m.source for m in svc.mounts), svc.name
        for port in svc.ports:
            assert port.host_ip == "127.0.0.1"
    wide = stack_for(empty_lab, bind_address="0.0.0.0")
    assert {p.host_ip for s in wide.services.values() for p in s.ports} == {"0.0.0.0"}
    assert wide.url("grafana") == "http://127.0.0.1:3000"  # still a URL one can open


def test_ports_images_and_memory_come_from_settings(empty_lab):
    env = {"TRADELAB_IMAGES__POSTGRES": "mirror.example/postgres:16",
           "TRADELAB_PORTS__API": "18000", "TRADELAB_MEMORY__ENGINE": "300m"}
    stack = stack_for(empty_lab, env=env)
    assert stack.services["postgres"].image == "mirror.example/postgres:16"
    assert stack.services["api"].port("http").host == 18000
    assert stack.services["api"].port("http").container == 8000
    assert stack.services["engine"].memory == "300m"
    assert stack.url("api") == "http://127.0.0.1:18000"


def test_addresses_and_urls_per_runtime(empty_lab):
    docker = stack_for(empty_lab, env={"TRADELAB_PORTS__API": "18000"})
    local = stack_for(empty_lab, "local", env={"TRADELAB_PORTS__API": "18000"})
    assert docker.address("api", "http") == "api:8000"
    assert local.address("api", "http") == "127.0.0.1:18000"
    assert local.services["api"].argv[-1] == "127.0.0.1:18000"
    assert docker.url("api") == local.url("api") == "http://127.0.0.1:18000"
    assert docker.url("postgres") is None and docker.url("engine") is None
    targets = {job: addr for job, addr, _ in local.scrape_targets()}
    assert targets["api"] == "127.0.0.1:18000" and targets["engine"] == "127.0.0.1:9101"
    assert all(a.startswith("127.0.0.1:") for a in targets.values())
    assert local.services["api"].environment["TRADELAB_DATABASE_URL"].startswith(
        "postgresql://tradelab_app@127.0.0.1:15432/")


def test_two_services_given_one_host_port_are_found(empty_lab):
    assert stack_for(empty_lab).shared_host_ports() == {}
    stack = stack_for(empty_lab, **{"ports.prometheus": 8000})  # the api's default port
    assert stack.shared_host_ports() == {8000: ["api", "prometheus"]}
    assert stack.shared_host_ports(["postgres", "api"]) == {}  # prometheus left out


def test_only_pulls_in_dependencies(empty_lab):
    stack = stack_for(empty_lab)
    assert stack.select(only=["api"]) == ["postgres", "migrate", "api"]
    assert stack.select(only=["promtail"]) == ["loki", "promtail"]


def test_without_removes_leaves_and_refuses_needed_services(empty_lab):
    stack = stack_for(empty_lab)
    chosen = stack.select(without=["grafana", "loki", "promtail"])
    assert "grafana" not in chosen and "api" in chosen and chosen[0] == "postgres"
    with pytest.raises(TradelabError) as err:
        stack.select(without=["postgres"])
    assert str(err.value) == (
        "postgres is needed by migrate, api, engine: keep postgres, or leave those out too "
        "(--without api,engine,migrate,postgres)")
    assert "api" not in stack.select(without=["api", "engine", "migrate", "postgres"])
    with pytest.raises(TradelabError, match="^migrate is needed by api:"):
        stack.select(only=["api"], without=["migrate"])
    with pytest.raises(TradelabError, match="unknown service 'apii'"):
        stack.select(only=["apii"])


def test_subset_keeps_only_the_selected_services_and_their_volumes(empty_lab):
    stack = stack_for(empty_lab)
    small = stack.subset(stack.select(only=["api"]))
    assert list(small.services) == ["postgres", "migrate", "api"]
    assert small.volumes == ("pgdata",)
    assert [job for job, _, _ in small.scrape_targets()] == ["api"]


def test_spec_hash_changes_only_for_the_affected_service(empty_lab):
    base = stack_for(empty_lab)
    hashes = {n: s.spec_hash() for n, s in base.services.items()}
    assert hashes == {n: s.spec_hash() for n, s in stack_for(empty_lab).services.items()}  # stable

    def changed(**flags):
        stack = stack_for(empty_lab, **flags)
        return {n for n, s in stack.services.items() if s.spec_hash() != hashes[n]}

    assert changed(**{"ports.api": 18000}) == {"api"}
    assert changed(**{"api.workers": 3}) == {"api"}
    assert changed(**{"engine.order_rate": 5.0}) == {"engine"}
    assert changed(**{"images.postgres": "other/postgres:16"}) == {"postgres"}
    assert changed(**{"memory.grafana": "300m"}) == {"grafana"}
    assert changed(load_workers=3) == {"locust-worker"}
    assert base.services["api"].spec_hash(extra="x") != hashes["api"]


def test_labels_and_names_match_compose(empty_lab):
    stack = stack_for(empty_lab, project="lab2")
    labels = stack.labels("api")
    assert labels["com.docker.compose.project"] == "lab2"
    assert labels["com.docker.compose.service"] == "api"
    assert labels["tradelab.config-hash"] == stack.services["api"].spec_hash()
    assert stack.network == "lab2_default"
    assert stack.volume_name("pgdata") == "lab2_pgdata"
    assert stack.container_name("api") == "lab2-api-1"


def test_building_a_stack_touches_nothing(empty_lab):
    stack_for(empty_lab)
    stack_for(empty_lab, "local")
    assert not empty_lab.root.exists()


@pytest.mark.parametrize("runtime", ["docker", "local"])
def test_locust_loads_every_bundled_scenario_with_the_class_picker(empty_lab, runtime):
    """Without --class-picker a folder would run all its user classes at once, and
    `tradelab load --profile/--user-type` could not choose per run."""
    stack = stack_for(empty_lab, runtime)
    master, worker = stack.services["locust-master"], stack.services["locust-worker"]
    folder = master.command[master.command.index("-f") + 1]
    assert worker.command[worker.command.index("-f") + 1] == folder
    if runtime == "local":
        assert (Path(folder) / "trader.py").is_file() and (Path(folder) / "spike.py").is_file()
    else:  # the rendered copy, and the libraries the image lacks on PYTHONPATH
        mounts = {m.target: m.source for m in master.mounts if m.kind == "config"}
        assert mounts[folder] == "locust"
        assert mounts[master.environment["PYTHONPATH"]] == "locust-vendor"
    assert "--class-picker" in master.command and "--class-picker" not in worker.command
    stop = master.command.index("--stop-timeout")
    assert master.command[stop + 1] == "10"  # users finish the order in flight
