"""deploy/ stays valid: every YAML parses, the manifests agree with the code (CLI options, settings, ports,
probes, Secret keys), the compose file runs both bots on an append-only Redis, the Dockerfile is multi-stage
and non-root. No docker or kubectl needed: these are parsed, not run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.discord.settings import DiscordSettings
from adapters.slack.settings import SlackSettings
from bots.cli import _parser
from bots.loader import available_bots
from core.console.settings import ConsoleSettings
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
API_VERSIONS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_docs() -> list[dict[str, Any]]:
    return [
        doc for path in sorted(K8S.glob("*.yaml")) for doc in load(path) if doc["kind"] != "Kustomization"
    ]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_docs() if doc["kind"] == kind]


def config() -> dict[str, str]:
    (cm,) = of_kind("ConfigMap")
    return dict(cm["data"])


def known_variables() -> set[str]:
    names = {name.upper() for name in Settings.model_fields}
    names |= {f"DISCORD_{name.upper()}" for name in DiscordSettings.model_fields}
    names |= {name.upper() for name in SlackSettings.model_fields}
    names |= {name.upper() for name in ConsoleSettings.model_fields}
    return names


def check_cli(args: list[str]) -> None:
    parsed = _parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.bot in available_bots(), parsed.bot


def pod_templates() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]) for d in of_kind("Deployment") + of_kind("StatefulSet")
    ]


def test_every_yaml_file_in_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 8
    for path in files:
        assert load(path), f"{path} is empty"


def test_every_manifest_is_well_formed_and_listed_in_the_kustomization() -> None:
    (kustomization,) = load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {name for name in present if not name.endswith(".example.yaml")}
    for doc in k8s_docs():
        assert doc["apiVersion"] == API_VERSIONS[doc["kind"]], doc["kind"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_deployments_probe_the_health_endpoints_on_the_ops_port() -> None:
    ops_port = int(config()["PARLEY_OPS_PORT"])
    deployments = of_kind("Deployment")
    assert {d["metadata"]["name"] for d in deployments} >= {"support", "arcade-gateway", "arcade-worker"}
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["replicas"] >= 1
        template = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["ops"] == ops_port
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ops_port)
        check_cli(container["args"])


def test_pods_run_as_non_root_with_resource_requests_and_time_to_shut_down() -> None:
    grace = float(config()["PARLEY_SHUTDOWN_GRACE"])
    for name, template in pod_templates():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for container in pod["containers"]:
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        if name != "redis":
            assert pod["terminationGracePeriodSeconds"] > grace, name


def test_secrets_are_referenced_not_inlined_and_every_variable_is_a_real_setting() -> None:
    (example,) = load(K8S / "secret.example.yaml")
    secret_keys = set(example["stringData"])
    known = known_variables()
    assert set(config()) <= known, set(config()) - known
    referenced: set[str] = set()
    for name, template in pod_templates():
        for container in template["spec"]["containers"]:
            for env in container.get("env", []):
                if name != "redis":
                    assert env["name"] in known, env["name"]
                source = env.get("valueFrom", {})
                assert (
                    not any(s in env["name"] for s in ("TOKEN", "SECRET", "KEY")) or "secretKeyRef" in source
                )
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["name"] == example["metadata"]["name"]
                    assert ref["key"] == env["name"]
                    referenced.add(ref["key"])
    assert referenced <= secret_keys
    assert {
        "OPENAI_API_KEY",
        "REDIS_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "DISCORD_TOKEN",
    } <= referenced


def test_services_and_budgets_select_pods_and_ports_that_exist() -> None:
    templates = dict(pod_templates())
    for service in of_kind("Service") + of_kind("PodDisruptionBudget"):
        spec = service["spec"]
        selector = spec.get("selector", {})
        selector = selector.get("matchLabels", selector)
        matches = [t for t in templates.values() if selector.items() <= t["metadata"]["labels"].items()]
        assert matches, service["metadata"]["name"]
        if service["kind"] == "Service":
            ports = {p["name"] for t in matches for c in t["spec"]["containers"] for p in c["ports"]}
            for port in spec["ports"]:
                assert port["targetPort"] in ports
    (support,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "support"]
    assert [p["targetPort"] for p in support["spec"]["ports"]] == ["http"]  # metrics stay off the public port


def test_redis_persists_append_only() -> None:
    (statefulset,) = of_kind("StatefulSet")
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert statefulset["spec"]["volumeClaimTemplates"]


def test_compose_runs_both_bots_on_an_append_only_redis() -> None:
    (compose,) = load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"redis", "support", "arcade"} <= set(services)
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    bots = set()
    for name, service in services.items():
        if name == "redis":
            continue
        check_cli(service["command"])
        bots.add(service["command"][service["command"].index("--bot") + 1])
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert set(service["environment"]) <= known_variables()
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "healthcheck" in service
        grace = float(service["environment"]["PARLEY_SHUTDOWN_GRACE"])
        assert float(service["stop_grace_period"].rstrip("s")) > grace
    assert bots == {"support", "arcade"}


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines: list[tuple[str, str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            lines.append((instruction.upper(), rest.strip()))
    return lines


def test_the_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    lines = dockerfile()
    stages = [i for i, (instruction, _) in enumerate(lines) if instruction == "FROM"]
    assert len(stages) >= 2
    final = lines[stages[-1] :]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(instruction == "HEALTHCHECK" for instruction, _ in final)
    assert any(instruction == "ENTRYPOINT" for instruction, _ in final)
    assert "3000" in " ".join(args for instruction, args in final if instruction == "EXPOSE")
    for instruction, args in lines:
        if instruction == "COPY" and "--from" not in args:
            *sources, _target = [a for a in shlex.split(args) if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"!core/**", "!adapters/**", "!bots/**"} <= set(ignore)


@pytest.mark.parametrize("name", ["README.md"])
def test_the_runbook_covers_operations(name: str) -> None:
    text = (DEPLOY / name).read_text().lower()
    for topic in ("scaling", "shard", "persistence", "upgrade", "sigterm", "/readyz", "/metrics", "sentinel"):
        assert topic in text, topic
