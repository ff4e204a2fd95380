"""The deployment files (Dockerfile, deploy/compose.yaml, deploy/k8s/) agree with the code.

No Docker engine and no `docker compose` plugin on the build machines, and no Kubernetes
schema validator in the dev tools: these are structural checks against the things the
files must agree with — the settings object (services/settings.py), the topic contract
(contracts/topics.py) and each other. Compose variable interpolation (`${VAR:-default}`,
`${VAR:?message}`, `$$`) is resolved here the way Compose resolves it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.topics import ALL_TOPICS
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

OKR_SERVICES = {
    "api": "services.api.main",
    "relay": "services.relay.main",
    "processor": "services.processor.main",
}
CONTRACT_TOPICS = {spec.name: spec.configs for spec in ALL_TOPICS}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)
# The one environment the compose file is resolved in: the required password, nothing else.
COMPOSE_ENV = {"POSTGRES_PASSWORD": "test-only-password"}


# --- helpers ---------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: dict[str, str]) -> str:
    """`text` with Compose's variable interpolation applied ($$ is a literal $)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return arg if unset else str(value)
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise AssertionError(f"required variable {name} unset: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text)


def variables(text: str) -> set[str]:
    """Names of the Compose variables `text` interpolates."""
    return {
        m.group("braced") or m.group("plain") for m in _VAR.finditer(text) if m.group(0) != "$$"
    }


def strings(node: Any) -> Iterator[str]:
    """Every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def key_values(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from key_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from key_values(item)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment as a mapping (both spellings of the section)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def resolved_environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(v, COMPOSE_ENV) for k, v in environment(service).items()}


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(load_all(path))
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def config_map(k8s_docs: list[dict[str, Any]]) -> dict[str, str]:
    data = of_kind(k8s_docs, "ConfigMap")["okrstream-config"]["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    return data


@pytest.fixture(scope="module")
def deployments(k8s_docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return of_kind(k8s_docs, "Deployment")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# --- every file -------------------------------------------------------------------------


def test_every_deploy_yaml_parses() -> None:
    files = yaml_files()
    assert COMPOSE_FILE in files
    assert len([p for p in files if p.parent == K8S]) >= 6
    for path in files:
        docs = load_all(path)
        assert docs, f"{path} holds no document"
        assert all(isinstance(d, dict) for d in docs), path


def okr_variable_names(compose: dict[str, Any], k8s_docs: list[dict[str, Any]]) -> set[str]:
    names = {k for k in dockerfile_env() if k.startswith("OKR_")}
    for service in compose["services"].values():
        names |= set(environment(service))
    for text in strings(compose):
        names |= variables(text)
    for line in (DEPLOY / "env.example").read_text().splitlines():
        names |= set(re.findall(r"^#?\s*(OKR_[A-Z0-9_]+)=", line))
    names |= set(re.findall(r"\bOKR_[A-Z0-9_]+", (DEPLOY / "README.md").read_text()))
    for doc in k8s_docs:
        if doc["kind"] == "ConfigMap":
            names |= set(doc["data"])
        for key, value in key_values(doc):
            if key == "env":
                names |= {item["name"] for item in value}
    return {n for n in names if n.startswith("OKR_")}


def test_every_okr_variable_is_a_settings_field(
    compose: dict[str, Any], k8s_docs: list[dict[str, Any]]
) -> None:
    assert Settings.model_config.get("env_prefix") == "OKR_"
    names = okr_variable_names(compose, k8s_docs)
    assert {"OKR_KAFKA_BOOTSTRAP", "OKR_DATABASE_URL", "OKR_KAFKA_PARTITIONS"} <= names
    unknown = sorted(
        n for n in names if n.removeprefix("OKR_").lower() not in Settings.model_fields
    )
    assert not unknown, f"not fields of services.settings.Settings: {unknown}"


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("OKR_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def test_compose_settings_validate(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OKR_SERVICES:
        env = {**dockerfile_env(), **resolved_environment(services[name])}
        settings = settings_from(
            {k: v for k, v in env.items() if k.startswith("OKR_")}, monkeypatch
        )
        assert not settings.embedded_broker
        assert settings.uses_postgres
        assert settings.postgres.host == "postgres"
        assert settings.postgres.password == COMPOSE_ENV["POSTGRES_PASSWORD"]
        assert settings.bootstrap_servers == "kafka:9092"
    api = settings_from(
        {k: v for k, v in resolved_environment(services["api"]).items() if k.startswith("OKR_")},
        monkeypatch,
    )
    assert api.http_host == "0.0.0.0"


def test_k8s_settings_validate(config_map: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**config_map, "OKR_DATABASE_URL": "postgresql://okrstream@db:5432/okrstream"}
    settings = settings_from(env, monkeypatch)
    assert not settings.embedded_broker
    assert settings.http_host == "0.0.0.0"
    assert settings.kafka_replication_factor == 3


def test_no_plaintext_secrets(compose: dict[str, Any], k8s_docs: list[dict[str, Any]]) -> None:
    for key, value in key_values(compose):
        if SECRET_WORDS.search(key) and isinstance(value, str | int):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), f"{key}: {value!r}"
    for text in strings(compose):
        for userinfo in re.findall(r"://([^@/\s]+)@", text):
            _user, _, password = userinfo.partition(":")
            assert not password or re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), text
    assert not of_kind(k8s_docs, "Secret"), "the operator creates the Secret; never commit one"
    for doc in k8s_docs:
        for text in strings(doc):
            assert not re.search(r"://[^@/\s:]+:[^@/\s]+@", text), f"credentials in {text!r}"
    for line in (DEPLOY / "env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#") and SECRET_WORDS.search(key):
            assert value.strip() == "", f"env.example must leave {key} empty"
    for word, rest in dockerfile_instructions():
        if word in ("ENV", "ARG"):
            assert not SECRET_WORDS.search(rest), f"{word} {rest}"
            assert "OKR_DATABASE_URL" not in rest


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_builds_one_non_root_image() -> None:
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    build_args = {}
    for word, rest in instructions:
        if word == "ARG":
            key, _, value = rest.partition("=")
            build_args[key] = value
    froms = [interpolate(rest.split()[0], build_args) for w, rest in instructions if w == "FROM"]
    assert froms, "no FROM"
    assert set(froms) == {"python:3.11-slim"}, froms
    users = [rest for w, rest in instructions if w == "USER"]
    assert users, "the image must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    installs = " ".join(rest for w, rest in instructions if w == "RUN" and "pip" in rest)
    assert re.search(r"pip (wheel|install)\b[^&;]*\s\.(\s|$)", installs), installs
    assert "[dev]" not in installs
    assert ".[" not in installs
    (healthcheck,) = [rest for w, rest in instructions if w == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "OKR_HTTP_PORT" in healthcheck
    assert "ENTRYPOINT" in words
    (cmd,) = [rest for w, rest in instructions if w == "CMD"]
    assert "services.api.main" in cmd
    assert dockerfile_env().get("OKR_HTTP_HOST") == "0.0.0.0"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", ".env", "deploy/.env", "tests"} <= patterns
    assert "README.md" not in patterns
    assert "pyproject.toml" not in patterns


# --- compose ------------------------------------------------------------------------------


def test_compose_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "postgres", "topics", "api", "relay", "processor"} <= set(services)


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag not in ("", "latest"), "pin the Kafka version"
    env = resolved_environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert len(env["CLUSTER_ID"]) == 22, "a base64 UUID"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not any("ZOOKEEPER" in k for k in env)
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])


def test_postgres_has_healthcheck_and_no_fixed_password(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert environment(postgres)["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        interpolate(environment(postgres)["POSTGRES_PASSWORD"], {})


def test_okrstream_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    images = set()
    for name, module in OKR_SERVICES.items():
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (DEPLOY / service["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
        images.add(service["image"])
        assert service["command"] == ["python", "-m", module]
        env = resolved_environment(service)
        assert env["OKR_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["OKR_DATABASE_URL"].startswith("postgresql://okrstream:")
        assert env["OKR_KAFKA_PARTITIONS"] == "12"
        depends = service["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["topics"]["condition"] == "service_completed_successfully"
    assert len(images) == 1


def test_compose_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "postgres", "api"):
        assert services[name]["healthcheck"]["test"], name
    api = services["api"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    container_port = int(interpolate(api["ports"][0], COMPOSE_ENV).rsplit(":", 1)[1])
    assert container_port == int(resolved_environment(api)["OKR_HTTP_PORT"]) == 8000
    # Relay and processor serve no HTTP: the image's /healthz check is off for them.
    for name in ("relay", "processor"):
        assert services[name]["healthcheck"] == {"disable": True}


def test_processor_scales_and_relay_does_not(services: dict[str, dict[str, Any]]) -> None:
    replicas = int(interpolate(str(services["processor"]["deploy"]["replicas"]), COMPOSE_ENV))
    partitions = int(resolved_environment(services["processor"])["OKR_KAFKA_PARTITIONS"])
    assert 1 <= replicas <= partitions
    assert "container_name" not in services["processor"]
    assert services["relay"].get("deploy", {}).get("replicas", 1) == 1


def topics_script(services: dict[str, dict[str, Any]]) -> tuple[str, dict[str, str]]:
    topics = services["topics"]
    (script,) = topics["command"]
    return interpolate(script, COMPOSE_ENV), resolved_environment(topics)


def test_topics_service_creates_the_contract_topics(
    services: dict[str, dict[str, Any]],
) -> None:
    topics = services["topics"]
    assert topics["image"] == services["kafka"]["image"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["restart"] == "no"
    script, env = topics_script(services)
    created: dict[str, dict[str, str]] = {}
    for line in script.splitlines():
        words = shlex.split(line) if line.startswith("topic ") else []
        if len(words) == 4:
            _, name, retention, cleanup = words
            for var, value in env.items():
                retention = retention.replace(f"${var}", value)
            created[name] = {"retention.ms": retention, "cleanup.policy": cleanup}
    assert created == CONTRACT_TOPICS
    assert "--replication-factor" in script
    assert '"$REPLICATION_FACTOR"' in script
    assert "min.insync.replicas=$MIN_INSYNC_REPLICAS" in script
    assert "--if-not-exists" in script
    assert env["PARTITIONS"] == resolved_environment(services["processor"])["OKR_KAFKA_PARTITIONS"]
    assert env["REPLICATION_FACTOR"] == "1"
    assert env["MIN_INSYNC_REPLICAS"] == "1"
    assert environment(topics)["READINGS_RETENTION_MS"] == "${READINGS_RETENTION_MS:-604800000}"


# --- Kubernetes ---------------------------------------------------------------------------


def test_k8s_documents_are_named(k8s_docs: list[dict[str, Any]]) -> None:
    seen = set()
    for doc in k8s_docs:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc["metadata"].get("name"), doc
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace"), f"{key} names no namespace"


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_all(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert [i["name"] for i in kustomization["images"]] == ["okrstream"]


def test_deployments_run_the_image_safely(
    deployments: dict[str, dict[str, Any]], config_map: dict[str, str]
) -> None:
    modules = {f"okrstream-{name}": module for name, module in OKR_SERVICES.items()}
    assert set(deployments) == set(modules)
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        c = container(deployment)
        assert c["image"] == "okrstream"
        assert c["args"] == ["python", "-m", modules[name]]
        assert "command" not in c, "keep the image's tini entrypoint"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert config_map["OKR_DATA_DIR"] in mounts
        assert "/tmp" in mounts
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        assert c["envFrom"] == [{"configMapRef": {"name": "okrstream-config"}}]
        (db,) = c["env"]
        assert db["name"] == "OKR_DATABASE_URL"
        assert db["valueFrom"]["secretKeyRef"] == {"name": "okrstream-database", "key": "url"}


def test_api_probes_and_service(
    k8s_docs: list[dict[str, Any]],
    deployments: dict[str, dict[str, Any]],
    config_map: dict[str, str],
) -> None:
    api = deployments["okrstream-api"]
    assert api["spec"]["replicas"] == 2
    c = container(api)
    (port,) = c["ports"]
    assert port["containerPort"] == int(config_map["OKR_HTTP_PORT"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    service = of_kind(k8s_docs, "Service")["okrstream-api"]
    assert (
        service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_relay_is_a_single_replica(
    k8s_docs: list[dict[str, Any]], deployments: dict[str, dict[str, Any]]
) -> None:
    relay = deployments["okrstream-relay"]
    assert relay["spec"]["replicas"] == 1
    assert relay["spec"]["strategy"]["type"] == "Recreate"
    targets = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind(k8s_docs, "HorizontalPodAutoscaler").values()
    }
    assert "okrstream-relay" not in targets


def test_processor_workers_of_two_releases_never_overlap(
    deployments: dict[str, dict[str, Any]],
) -> None:
    # Old workers cannot write a newer projection schema's tables (deploy/README.md).
    assert deployments["okrstream-processor"]["spec"]["strategy"] == {"type": "Recreate"}


def test_processor_autoscaler_bounded_by_partitions(
    k8s_docs: list[dict[str, Any]],
    deployments: dict[str, dict[str, Any]],
    config_map: dict[str, str],
) -> None:
    hpas = of_kind(k8s_docs, "HorizontalPodAutoscaler")
    (hpa,) = hpas.values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "okrstream-processor")
    partitions = int(config_map["OKR_KAFKA_PARTITIONS"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions
    assert deployments["okrstream-processor"]["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def test_kafka_topics_match_the_contract(
    k8s_docs: list[dict[str, Any]], config_map: dict[str, str]
) -> None:
    topics = of_kind(k8s_docs, "KafkaTopic")
    assert set(topics) == set(CONTRACT_TOPICS)
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"].get("strimzi.io/cluster")
        spec = topic["spec"]
        assert spec.get("topicName", name) == name
        assert spec["partitions"] == int(config_map["OKR_KAFKA_PARTITIONS"])
        assert spec["replicas"] == int(config_map["OKR_KAFKA_REPLICATION_FACTOR"]) == 3
        config = {k: str(v) for k, v in spec["config"].items()}
        assert config["min.insync.replicas"] == "2"
        for key, value in CONTRACT_TOPICS[name].items():
            assert config[key] == value, (name, key)


def test_topics_script_runs(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The topics service's script, run by bash against stand-ins of the Kafka tools."""
    script, env = topics_script(services)
    calls = tmp_path / "calls"
    for tool in ("kafka-topics.sh", "kafka-configs.sh"):
        stub = tmp_path / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        stub.chmod(0o755)
    entrypoint = services["topics"]["entrypoint"]
    assert entrypoint[0] == "/bin/bash"
    subprocess.run(
        ["bash", *entrypoint[1:], script],
        env={"PATH": os.environ["PATH"], "KAFKA_BIN": str(tmp_path), **env},
        check=True,
        timeout=30,
    )
    lines = calls.read_text().splitlines()
    for name, configs in CONTRACT_TOPICS.items():
        (create,) = [x for x in lines if x.startswith("kafka-topics.sh") and f" {name} " in x]
        assert "--create --if-not-exists" in create
        assert f"--partitions {env['PARTITIONS']} --replication-factor 1" in create
        for key, value in configs.items():
            assert f"--config {key}={value}" in create
        assert f"--config min.insync.replicas={env['MIN_INSYNC_REPLICAS']}" in create
        (alter,) = [x for x in lines if x.startswith("kafka-configs.sh") and f" {name} " in x]
        assert f"retention.ms={configs['retention.ms']}," in alter


def test_readme_documents_every_setting() -> None:
    readme = (DEPLOY / "README.md").read_text()
    table = set(re.findall(r"^\| `(OKR_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    fields = {f"OKR_{name.upper()}" for name in Settings.model_fields}
    assert table == fields, f"undocumented: {fields - table}; unknown: {table - fields}"
    assert "ingest_mode" in readme
