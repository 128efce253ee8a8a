"""The chart's RBAC is exactly what the code needs, rule by rule (real helm).

The rules are spelled out here on purpose: adding a verb or a resource must change this
file too, in the same commit that adds the code needing it. Each one is derived in
charts/dockyard/templates/rbac-*.yaml, with why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.deploy.manifests import NAMESPACE, RELEASE, Doc, find, helm_template

OPERATOR = f"{RELEASE}-dockyard-operator"
NODE = f"{RELEASE}-dockyard-node"
STATUS = ["containers/status", "images/status", "commits/status", "volumes/status",
          "dockyardnodes/status", "stages/status", "promotions/status"]


def rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


OPERATOR_RULES = [
    rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
    rule("dockyard.dev", ["containers"], ["get", "list", "watch", "create", "patch"]),
    rule("dockyard.dev", ["images"], ["get", "list", "watch", "create", "patch"]),
    rule("dockyard.dev", ["commits"], ["list", "watch", "patch"]),
    rule("dockyard.dev", ["volumes"], ["list", "watch"]),
    rule("dockyard.dev", ["dockyardnodes"], ["list", "watch", "patch"]),
    rule("dockyard.dev", ["stages"], ["get", "list", "watch", "patch"]),
    rule("dockyard.dev", ["promotions"], ["list", "watch", "patch"]),
    rule("dockyard.dev", ["promotions/finalizers"], ["update"]),
    rule("dockyard.dev", STATUS, ["patch"]),
    rule("coordination.k8s.io", ["leases"], ["list", "watch"]),
    rule("", ["events"], ["create"]),
    rule("kopf.dev", ["clusterkopfpeerings"], ["list", "watch", "patch"]),
]
AGENT_RULES = [
    rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
    rule("dockyard.dev", ["containers"], ["list", "watch", "patch"]),
    rule("dockyard.dev", ["commits"], ["list", "watch", "patch"]),
    rule("dockyard.dev", ["images"], ["get", "create"]),
    rule("dockyard.dev", ["volumes"], ["get"]),
    rule("dockyard.dev", ["dockyardnodes"], ["get", "create"]),
    rule("dockyard.dev", ["containers/status", "commits/status", "images/status",
                          "volumes/status", "dockyardnodes/status"], ["patch"]),
]
AGENT_LEASE_RULES = [rule("coordination.k8s.io", ["leases"], ["create", "patch"])]


def rendered() -> list[Doc]:
    return helm_template()


def test_the_operator_may_do_exactly_what_its_code_does() -> None:
    assert find(rendered(), "ClusterRole", OPERATOR)["rules"] == OPERATOR_RULES


def test_the_node_agent_may_do_exactly_what_its_code_does() -> None:
    docs = rendered()
    assert find(docs, "ClusterRole", NODE)["rules"] == AGENT_RULES
    lease_role = find(docs, "Role", NODE)
    assert lease_role["metadata"]["namespace"] == NAMESPACE  # its Leases' namespace only
    assert lease_role["rules"] == AGENT_LEASE_RULES


def test_no_rule_uses_a_wildcard() -> None:
    for doc in rendered():
        for entry in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in entry.get(key, []), f"{doc['kind']} {entry}"


def test_each_binding_grants_its_role_to_its_own_service_account() -> None:
    docs = rendered()
    for kind, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        for binding in (d for d in docs if d["kind"] == kind):
            name = binding["metadata"]["name"]
            assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                          "kind": role, "name": name}
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                            "namespace": NAMESPACE}]
            find(docs, "ServiceAccount", name)


def test_each_workload_runs_as_its_own_service_account() -> None:
    docs = rendered()
    for kind, account in (("Deployment", OPERATOR), ("DaemonSet", NODE)):
        assert find(docs, kind)["spec"]["template"]["spec"]["serviceAccountName"] == account


def test_rbac_off_leaves_only_the_service_accounts(tmp_path: Path) -> None:
    docs = helm_template({"rbac": {"create": False}}, tmp=tmp_path)
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io")]
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount") == \
        sorted([OPERATOR, NODE])
