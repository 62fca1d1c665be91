"""docker-compose.yml, checked without a Docker engine: services, images, environment, order."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values

from portal.config import PROJECT_ROOT, Settings
from scripts.run_local import default_env
from tests.deploy.dockerfile import read_stages

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
PORTAL_SERVICES = ("migrate", "web", "worker")
EXPECTED_SERVICES = {"migrate", "web", "worker", "db", "redis", "storage", "idp", "inference"}
#: Ports the stock images listen on, for services built from an image of their own.
IMAGE_PORTS = {"postgres": 5432, "redis": 6379}
DEPENDENCY_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Fill ${NAME}, ${NAME:-default} and ${NAME:?error} as Compose does."""

    def fill(match: re.Match) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = values.get(name, "")
        if op in (":?", "?") and not value:
            raise KeyError(f"{name} is required: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value

    return VARIABLE.sub(fill, text.replace("$$", "\0")).replace("\0", "$")


def load_compose(values: dict[str, str]) -> dict:
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), values))


@pytest.fixture(scope="module")
def compose() -> dict:
    # `make env` writes these values into .env, which Compose reads for ${...}.
    return load_compose(default_env())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def hostnames(compose: dict) -> set[str]:
    names = set(compose["services"])
    for service in compose["services"].values():
        for network in (service.get("networks") or {}).values():
            names.update((network or {}).get("aliases", []))
    return names


def test_required_variables_come_from_make_env():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    required = {m.group("name") for m in VARIABLE.finditer(text) if m.group("op") == ":?"}
    assert required == {
        "SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "COGNITO_CLIENT_SECRET",
        "INFERENCE_API_TOKEN",
    }
    assert required <= set(default_env())
    with pytest.raises(KeyError, match="SECRET_KEY is required"):
        load_compose({name: value for name, value in default_env().items() if name != "SECRET_KEY"})


def test_services_present(compose):
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_each_service_has_image_or_build(compose):
    stages = read_stages()
    for name, service in compose["services"].items():
        build = service.get("build")
        assert build or service.get("image"), f"{name} has neither image nor build"
        if build:
            assert build["context"] == "."
            assert build["target"] in stages, f"{name}: no Dockerfile stage {build['target']}"


def test_database_and_cache_versions(compose):
    assert compose["services"]["db"]["image"].split(":")[1].split(".")[0] == "15"
    assert compose["services"]["redis"]["image"].split(":")[1].split(".")[0] == "7"


def test_web_worker_migrate_share_one_image(compose):
    images = {compose["services"][name]["image"] for name in PORTAL_SERVICES}
    targets = {compose["services"][name]["build"]["target"] for name in PORTAL_SERVICES}
    assert len(images) == 1
    assert targets == {"portal"}
    assert compose["services"]["worker"]["command"][:4] == ["flask", "--app", "wsgi", "worker"]
    assert "command" not in compose["services"]["web"], "web must run the image's gunicorn"


def test_dependencies_exist_with_valid_conditions(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, options in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert options["condition"] in DEPENDENCY_CONDITIONS, (name, dependency)


def has_healthcheck(compose: dict, name: str) -> bool:
    service = compose["services"][name]
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    build = service.get("build")
    return bool(build and read_stages()[build["target"]].values("HEALTHCHECK"))


def test_healthy_conditions_have_healthchecks(compose):
    for name, service in compose["services"].items():
        for dependency, options in (service.get("depends_on") or {}).items():
            if options["condition"] == "service_healthy":
                assert has_healthcheck(compose, dependency), f"{name} waits on {dependency}"


def test_every_long_running_service_has_healthcheck(compose):
    for name in EXPECTED_SERVICES - {"migrate"}:
        assert has_healthcheck(compose, name), name


def test_migrations_run_once_before_web_and_worker(compose):
    services = compose["services"]
    migrate = services["migrate"]
    assert "db upgrade" in " ".join(migrate["command"])
    assert migrate.get("restart") == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_worker_has_its_own_healthcheck(compose):
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1:5] == ["flask", "--app", "wsgi", "worker-health"]
    assert "/health/live" not in " ".join(test)


def test_portal_environment_is_documented_and_valid(compose):
    documented = set(dotenv_values(PROJECT_ROOT / ".env.example"))
    for name in PORTAL_SERVICES:
        env = environment(compose["services"][name])
        assert set(env) - documented == set(), f"{name} sets variables missing from .env.example"
        settings = Settings.from_env(env)
        settings.check()
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.redis_url


def test_portal_urls_point_at_services(compose):
    known = hostnames(compose)
    stages = read_stages()
    for name in PORTAL_SERVICES:
        env = environment(compose["services"][name])
        for variable in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "OIDC_ISSUER"):
            host = urlsplit(env[variable]).hostname
            assert host in known, f"{name}: {variable} host {host} is no service or alias"
        inference = urlsplit(env["INFERENCE_API_URL"])
        assert inference.hostname == "inference"
        exposed = " ".join(stages["segmenter"].values("EXPOSE"))
        assert str(inference.port) in exposed.split()
        assert urlsplit(env["DATABASE_URL"]).port == IMAGE_PORTS["postgres"]
        assert urlsplit(env["REDIS_URL"]).port == IMAGE_PORTS["redis"]


def test_stand_ins_share_the_portal_secrets(compose):
    services = compose["services"]
    web = environment(services["web"])
    idp = environment(services["idp"])
    storage = environment(services["storage"])
    inference = environment(services["inference"])
    assert idp["DEVIDP_ISSUER"] == web["OIDC_ISSUER"]
    assert idp["DEVIDP_CLIENT_ID"] == web["COGNITO_CLIENT_ID"]
    assert idp["DEVIDP_CLIENT_SECRET"] == web["COGNITO_CLIENT_SECRET"]
    assert idp["DEVIDP_REDIRECT_URIS"] == web["PORTAL_BASE_URL"] + "/auth/callback"
    assert idp["DEVIDP_LOGOUT_URIS"] == web["PORTAL_BASE_URL"] + "/auth/signed-out"
    assert storage["AWS_ACCESS_KEY_ID"] == web["AWS_ACCESS_KEY_ID"]
    assert storage["AWS_SECRET_ACCESS_KEY"] == web["AWS_SECRET_ACCESS_KEY"]
    assert storage["STORAGE_ALLOW_ORIGIN"] == web["PORTAL_BASE_URL"]
    assert inference["SEGMENTER_TOKEN"] == web["INFERENCE_API_TOKEN"]
    db = environment(services["db"])
    database = urlsplit(web["DATABASE_URL"])
    assert (database.username, database.password) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
    assert database.path == "/" + db["POSTGRES_DB"]


def test_browser_urls_reach_published_ports(compose):
    services = compose["services"]
    web = environment(services["web"])
    published = {}
    for name, service in services.items():
        for mapping in service.get("ports") or []:
            address, host_port, container_port = mapping.split(":")
            assert address == "127.0.0.1", f"{name} publishes {mapping} beyond this machine"
            published[int(host_port)] = name
    for variable, expected in (
        ("PORTAL_BASE_URL", "web"),
        ("S3_PUBLIC_ENDPOINT_URL", "storage"),
        ("OIDC_ISSUER", "idp"),
    ):
        url = urlsplit(web[variable])
        assert url.hostname == "localhost" or url.hostname.endswith(".localhost"), variable
        assert published.get(url.port) == expected, variable


def test_named_volumes_declared_and_used(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    assert {"db-data", "redis-data", "storage-data"} <= declared
