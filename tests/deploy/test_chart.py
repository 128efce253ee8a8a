"""The Helm chart renders valid, labelled objects for its defaults and its variants (real helm).

Each file in tests/deploy/values/ is one variant (webhook off, cert-manager, one replica,
a custom image, other tolerations, a pipeline of one's own, everything changed at once);
every object each renders is validated (see manifests.py for how far that goes without an
API server). The Stages of the pipeline have their own tests: test_chart_stages.py.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from tests.conftest import tool
from tests.deploy.manifests import (
    CHART,
    NAMESPACE,
    RELEASE,
    Doc,
    env_of,
    find,
    helm_template,
    kinds,
    ok,
    problems,
    run,
)

VALUES = sorted((Path(__file__).parent / "values").glob("*.yaml"))
VARIANTS = [None, *VALUES]
IDS = ["defaults", *(p.stem for p in VALUES)]
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/component",
                   "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart")
_rendered: dict[Path | None, list[Doc]] = {}


def rendered(values_file: Path | None = None) -> list[Doc]:
    """The chart rendered with a values file (None: defaults), once per test run."""
    if values_file not in _rendered:
        _rendered[values_file] = helm_template(values_file=values_file)
    return _rendered[values_file]


def variant(name: str) -> list[Doc]:
    return rendered(Path(__file__).parent / "values" / f"{name}.yaml")


def operator_container(docs: list[Doc]) -> Doc:
    deployment = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    found: Doc = container
    return found


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
def test_helm_lint_strict_passes(values_file: Path | None) -> None:
    args = ["--values", str(values_file)] if values_file else []
    ok(tool("helm"), "lint", "--strict", str(CHART), *args)


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
def test_every_rendered_object_is_valid(values_file: Path | None) -> None:
    found = {f"{d['kind']}/{d['metadata']['name']}": problems(d) for d in rendered(values_file)}
    assert {key: p for key, p in found.items() if p} == {}


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
def test_every_rendered_object_carries_the_standard_labels(values_file: Path | None) -> None:
    for doc in rendered(values_file):
        labels = doc["metadata"].get("labels") or {}
        missing = [key for key in STANDARD_LABELS if not labels.get(key)]
        assert missing == [], f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/part-of"] == "dockyard"


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
def test_every_namespaced_object_goes_to_the_release_namespace(values_file: Path | None
                                                               ) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering",
                      "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Stage"}
    for doc in rendered(values_file):
        namespace = doc["metadata"].get("namespace")
        assert namespace == (None if doc["kind"] in cluster_scoped else NAMESPACE), doc["kind"]


def test_the_defaults_render_the_whole_platform() -> None:
    assert kinds(rendered()) == sorted([
        "ClusterKopfPeering", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
        "ClusterRoleBinding", "DaemonSet", "Deployment", "MutatingWebhookConfiguration",
        "PodDisruptionBudget", "Role", "RoleBinding", "Secret", "Secret", "Service",
        "Service", "ServiceAccount", "ServiceAccount", "Stage", "Stage", "Stage", "Stage",
        "ValidatingWebhookConfiguration"])


def test_helm_ships_our_crds_and_kopfs_peering_crds() -> None:
    out = ok(tool("helm"), "show", "crds", str(CHART))
    names = sorted(line.split(":", 1)[1].strip() for line in out.splitlines()
                   if line.startswith("  name:"))
    assert "clusterkopfpeerings.kopf.dev" in names
    assert "kopfpeerings.kopf.dev" in names


def test_the_operator_runs_kopf_on_every_namespace_with_its_health_endpoint() -> None:
    container = operator_container(rendered())
    assert container["command"] == ["kopf", "run", "-m", "dockyard_operator.main",
                                    "--all-namespaces", "--liveness",
                                    "http://0.0.0.0:8080/healthz"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080} in container["ports"]


def test_the_operator_gets_every_setting_it_reads() -> None:
    env = env_of(operator_container(rendered()))
    assert env["DOCKYARD_NODE_GRACE"] == "40"
    assert env["DOCKYARD_METRICS_LISTEN"] == "0.0.0.0:8000"
    assert env["DOCKYARD_PEERING_LIFETIME"] == "60"
    assert env["DOCKYARD_WEBHOOK_LISTEN"] == "0.0.0.0:9443"
    assert env["DOCKYARD_WEBHOOK_CERT_DIR"] == "/etc/dockyard/webhook"


def test_the_operator_runs_locked_down() -> None:
    docs = rendered()
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert operator_container(docs)["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert pod["serviceAccountName"] == f"{RELEASE}-dockyard-operator"


def test_the_chart_creates_the_peering_the_replicas_meet_in() -> None:
    assert find(rendered(), "ClusterKopfPeering")["metadata"]["name"] == "dockyard"
    assert find(rendered(), "Deployment")["spec"]["replicas"] == 2


def test_one_replica_gets_no_disruption_budget() -> None:
    docs = variant("single-replica")
    assert find(docs, "Deployment")["spec"]["replicas"] == 1
    assert "PodDisruptionBudget" not in kinds(docs)


def test_a_custom_image_is_used_as_given() -> None:
    docs = variant("custom-image")
    assert operator_container(docs)["image"] == \
        "registry.example.com/platform/dockyard-operator:0.1.0-rc.1"
    assert operator_container(docs)["imagePullPolicy"] == "Always"
    pod = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    for container in (*pod["initContainers"], *pod["containers"]):
        assert container["image"] == "registry.example.com/platform/dockyard-shim:0.1.0-rc.1"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_image_tags_default_to_the_app_version() -> None:
    assert operator_container(rendered())["image"] == "dockyard/operator:0.1.0"


def test_the_node_shim_tolerates_every_taint_unless_told_otherwise() -> None:
    pod = find(rendered(), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    custom = variant("extra-tolerations")
    pod = find(custom, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"dockyard.dev/runtime": "true"}
    operator_pod = find(custom, "Deployment")["spec"]["template"]["spec"]
    assert operator_pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}


def test_the_node_shim_runs_the_daemon_before_the_agent_with_the_host_it_needs() -> None:
    pod = find(rendered(), "DaemonSet")["spec"]["template"]["spec"]
    assert (pod["hostPID"], pod["hostNetwork"]) == (True, True)
    (daemon,) = pod["initContainers"]
    (agent,) = pod["containers"]
    assert daemon["restartPolicy"] == "Always"  # a native sidecar: up before the agent
    assert daemon["command"] == ["dockyard", "shim"]
    assert daemon["startupProbe"]["exec"]["command"][0] == "python3"
    assert agent["command"][:2] == ["dockyard", "agent"]
    assert f"--lease-namespace={NAMESPACE}" in agent["command"]
    assert env_of(agent)["DOCKYARD_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    for container in (daemon, agent):
        assert container["securityContext"]["privileged"] is True
        env = env_of(container)
        assert env["DOCKYARD_ROOT"] == "/var/lib/dockyard"
        assert env["DOCKYARD_HOST"] == "/run/dockyard/dockyard.sock"
        assert env["DOCKYARD_TRANSFER_LISTEN"] == "$(HOST_IP):7443"
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["state"]["mountPropagation"] == "Bidirectional"
    paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert paths == {"state": "/var/lib/dockyard", "run": "/run/dockyard",
                     "cgroup": "/sys/fs/cgroup", "host-etc": "/etc"}
    # The daemon reads the node's subordinate ids (hostUsers: false), read-only.
    assert (env_of(daemon)["DOCKYARD_SUBUID"], env_of(daemon)["DOCKYARD_SUBGID"]) == \
        ("/host/etc/subuid", "/host/etc/subgid")
    (etc,) = [m for m in daemon["volumeMounts"] if m["name"] == "host-etc"]
    assert (etc["mountPath"], etc["readOnly"]) == ("/host/etc", True)
    token = next(v for v in pod["volumes"] if v["name"] == "transfer-token")
    assert token["secret"]["defaultMode"] == 0o400  # the shim refuses a readable token


def test_changed_shim_settings_reach_both_processes() -> None:
    pod = find(variant("non-default"), "DaemonSet")["spec"]["template"]["spec"]
    (daemon,) = pod["initContainers"]
    (agent,) = pod["containers"]
    assert env_of(daemon)["DOCKYARD_HOST_PATHS"] == "/srv:/data/shared"
    assert env_of(daemon)["DOCKYARD_CGROUP_PARENT"] == "dockyard-nodes"
    for container in (daemon, agent):
        assert env_of(container)["DOCKYARD_ROOT"] == "/data/dockyard"
        assert env_of(container)["REGISTRY_AUTH_FILE"] == "/etc/dockyard/registry/config.json"
    assert not any(arg.startswith("--metrics-listen") for arg in agent["command"])
    assert "--poll-every=0.5" in agent["command"]
    token = next(v for v in pod["volumes"] if v["name"] == "transfer-token")
    assert token["secret"]["secretName"] == "transfer-token"
    assert "Secret" not in kinds(variant("non-default"))  # both Secrets come from outside


def test_the_webhooks_are_those_the_operator_serves() -> None:
    docs = rendered()
    validating = find(docs, "ValidatingWebhookConfiguration")["webhooks"]
    mutating = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    served = {w["name"]: (w["clientConfig"]["service"]["path"], w["rules"])
              for w in validating + mutating}
    rule = {"apiGroups": ["dockyard.dev"], "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}
    assert served == {
        "policy.dockyard.dev": ("/policy", [{**rule, "resources": ["containers", "volumes",
                                                                   "images"]}]),
        "promotions.dockyard.dev": ("/promotions", [{**rule, "resources": ["promotions"]}]),
        "approvals.dockyard.dev": ("/approvals", [{**rule, "resources": ["promotions"]}])}
    (policy,) = [hook for hook in validating if hook["name"] == "policy.dockyard.dev"]
    assert policy["matchConditions"] == [{  # metadata-only updates skip the webhook
        "name": "spec-changed",
        "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec"}]
    service = find(docs, "Service", f"{RELEASE}-dockyard-webhook")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443,
                                         "targetPort": "webhook"}]
    assert {"name": "webhook", "containerPort": 9443} in operator_container(docs)["ports"]
    for hook in validating + mutating:
        assert hook["clientConfig"]["service"] == {
            "name": service["metadata"]["name"], "namespace": NAMESPACE,
            "path": hook["clientConfig"]["service"]["path"], "port": 443}
        assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"]) == \
            ("Fail", "None", 10)
        assert hook["admissionReviewVersions"] == ["v1"]


def test_the_generated_certificate_is_trusted_by_every_ca_bundle(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is part of Debian's ca-certificates: install it"
    docs = rendered()
    secret = find(docs, "Secret", f"{RELEASE}-dockyard-webhook-tls")
    bundles = {hook["clientConfig"]["caBundle"]
               for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
               for hook in find(docs, kind)["webhooks"]}
    assert bundles == {secret["data"]["ca.crt"]}
    for key in ("ca.crt", "tls.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    verified = run(openssl, "verify", "-CAfile", str(tmp_path / "ca.crt"),
                   str(tmp_path / "tls.crt"))
    assert verified.returncode == 0, verified.stderr
    names = ok(openssl, "x509", "-noout", "-ext", "subjectAltName",
               "-in", str(tmp_path / "tls.crt"))
    assert f"DNS:{RELEASE}-dockyard-webhook.{NAMESPACE}.svc" in names


def test_with_cert_manager_the_ca_is_injected_from_its_certificate() -> None:
    docs = variant("cert-manager")
    certificate = find(docs, "Certificate")
    issuer = find(docs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer",
                                                "name": issuer["metadata"]["name"]}
    assert certificate["spec"]["secretName"] == f"{RELEASE}-dockyard-webhook-tls"
    assert f"{RELEASE}-dockyard-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = find(docs, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])
    assert [s["metadata"]["name"] for s in docs if s["kind"] == "Secret"] == \
        [f"{RELEASE}-dockyard-transfer"]  # the TLS Secret is cert-manager's to write


def test_without_the_webhook_nothing_of_it_is_left() -> None:
    docs = variant("webhook-off")
    assert not {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
                "Certificate", "Issuer"} & set(kinds(docs))
    assert [d["metadata"]["name"] for d in docs if d["kind"] in ("Service", "Secret")] == \
        [f"{RELEASE}-dockyard-transfer", f"{RELEASE}-dockyard-metrics"]
    container = operator_container(docs)
    env = env_of(container)
    assert env["DOCKYARD_WEBHOOK_LISTEN"] == ""
    assert "DOCKYARD_WEBHOOK_CERT_DIR" not in env
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp"]


def test_the_metrics_service_is_annotated_for_prometheus_on_request() -> None:
    service = find(rendered(), "Service", f"{RELEASE}-dockyard-metrics")
    assert service["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics"}
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000,
                                         "targetPort": "metrics"}]
    custom = find(variant("non-default"), "Service", "shipyard-metrics")
    assert custom["metadata"]["annotations"] == {"example.com/scrape": "yes"}


def test_the_webhook_failure_policy_follows_the_values() -> None:
    docs = variant("non-default")
    hooks = find(docs, "ValidatingWebhookConfiguration")["webhooks"] + \
        find(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert {hook["failurePolicy"] for hook in hooks} == {"Ignore"}
