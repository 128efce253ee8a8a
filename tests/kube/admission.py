"""Dynamic admission for the test API server: who a request is from, the webhook
configurations, and the calls to the webhooks, as kube-apiserver makes them.

The server (`tests/kube/apiserver.py`) owns the objects and says when to admit: it asks
`Admission.mutate` before it defaults and validates an object, `Admission.validate` after,
and then stores it. This module matches webhooks to the request, POSTs each an
`admission.k8s.io` `AdmissionReview`, applies the JSON patches of mutating webhooks, and
turns a denial or a failed call into the error the real server answers with. It stores
nothing: it reads the configurations the server keeps, through the mapping it is given.

As kube-apiserver's webhook plugins (k8s.io/apiserver, admission/plugin/webhook) do it:
- rules: operations, apiGroups, apiVersions and resources with `*`, `resource/subresource`
  (`pods/*`, `*/status`, `*/*`), and scope; `objectSelector` against the new or the old
  object, `namespaceSelector` against the labels of the request's namespace (never
  exempting a cluster-scoped object other than a Namespace);
- mutating webhooks one after the other, configurations in name order, each seeing the
  patches of the ones before; validating webhooks all at once;
- `failurePolicy` (Fail by default: a 500 "failed calling webhook"; Ignore: skipped),
  `timeoutSeconds` (10 by default), TLS verified against `caBundle` (else the system's
  roots) and, for a `service`, for the name `<service>.<namespace>.svc`;
- a denial answers with the webhook's status code (400 if it gives none or one below 400)
  and `admission webhook "NAME" denied the request: MESSAGE`; `warnings` come back to the
  client as `Warning: 299` headers;
- the configurations themselves are never sent to webhooks.

Not emulated: `reinvocationPolicy: IfNeeded` (no webhook is called a second time),
`matchConditions` (a configuration with them is refused, rather than calling webhooks
the real server would skip), `matchPolicy` (every kind has one version, so Exact and
Equivalent agree), audit annotations, and credentials of the server towards webhooks.
A plain `http://` URL is accepted, where the real server takes https only, so that tests
can run webhooks without certificates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import re
import ssl
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import jsonpatch
from kmock import KubernetesError

from dockyard_api.manifests import Problem

GROUP = "admissionregistration.k8s.io"
VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"
REVIEW_VERSIONS = ("v1", "v1beta1")
"""The AdmissionReview versions the server can send, in its order of preference."""
NAME_LABEL = "kubernetes.io/metadata.name"
"""The label every namespace has, set by the real server to the namespace's name."""
AUTHENTICATED = "system:authenticated"


# ---------------------------------------------------------------------- who is asking

@dataclass(frozen=True)
class UserInfo:
    """A user the server knows by a bearer token (`ApiServer(users={token: UserInfo})`)."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""


ANONYMOUS = UserInfo("system:anonymous", groups=("system:unauthenticated",))


def identify(headers: Mapping[str, str], users: Mapping[str, UserInfo]) -> dict[str, Any]:
    """The `userInfo` of a request: the user of its bearer token, also in the group
    `system:authenticated` as every authenticated user is; without a token, or with one
    that is not in `users`, `system:anonymous` (a real server answers 401 to a token it
    does not know)."""
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = authorization.strip().partition(" ")
    user = users.get(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        user = ANONYMOUS
    elif AUTHENTICATED not in user.groups:
        user = replace(user, groups=(*user.groups, AUTHENTICATED))
    info: dict[str, Any] = {"username": user.username, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    return info


# ---------------------------------------------------------------------- configurations

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT", "*")
_ENUMS = {"failurePolicy": ("Ignore", "Fail"), "matchPolicy": ("Exact", "Equivalent"),
          "sideEffects": ("None", "NoneOnDryRun")}


def with_defaults(obj: dict[str, Any], *, mutating: bool) -> dict[str, Any]:
    """`obj` with what the real server fills into a webhook configuration it stores
    (admissionregistration/v1 defaults); kopf, for one, relies on them."""
    obj = copy.deepcopy(obj)
    defaults: dict[str, Any] = {"failurePolicy": "Fail", "matchPolicy": "Equivalent",
                                "timeoutSeconds": 10, "namespaceSelector": {},
                                "objectSelector": {}}
    if mutating:
        defaults["reinvocationPolicy"] = "Never"
    webhooks = obj.get("webhooks")
    for hook in webhooks if isinstance(webhooks, list) else []:
        if not isinstance(hook, dict):
            continue
        for key, value in defaults.items():
            if hook.get(key) is None:
                hook[key] = copy.deepcopy(value)
        for rule in hook.get("rules") or []:
            if isinstance(rule, dict) and rule.get("scope") is None:
                rule["scope"] = "*"
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict) and service.get("port") is None:
            service["port"] = 443
    return obj


def configuration_problems(obj: dict[str, Any], *, mutating: bool) -> list[Problem]:
    """What the real server refuses (422) in a webhook configuration, defaults applied."""
    webhooks = obj.get("webhooks")
    if webhooks is None:
        return []
    if not isinstance(webhooks, list):
        return [Problem("webhooks", "Invalid value: must be a list")]
    problems, names = [], set()
    for index, hook in enumerate(webhooks):
        path = f"webhooks[{index}]"
        if not isinstance(hook, dict):
            problems.append(Problem(path, "Invalid value: must be an object"))
            continue
        problems += _webhook_problems(hook, path, mutating=mutating)
        name = hook.get("name")
        if isinstance(name, str) and name in names:
            problems.append(Problem(f"{path}.name", f'Duplicate value: "{name}"'))
        names.add(name if isinstance(name, str) else "")
    return problems


def _webhook_problems(hook: dict[str, Any], path: str, *, mutating: bool) -> list[Problem]:
    problems = []
    name = hook.get("name")
    if not name:
        problems.append(Problem(f"{path}.name", "Required value"))
    elif not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
        problems.append(Problem(f"{path}.name", f"Invalid value: {json.dumps(name)}: a "
                                "lowercase RFC 1123 subdomain must consist of lower case "
                                "alphanumeric characters, '-' or '.'"))
    elif name.count(".") < 2:
        problems.append(Problem(f"{path}.name", f'Invalid value: "{name}": should be a '
                                "domain with at least three segments separated by dots"))
    versions = hook.get("admissionReviewVersions")
    if not versions:
        problems.append(Problem(f"{path}.admissionReviewVersions", "Required value: must "
                                "specify one of v1, v1beta1"))
    elif not isinstance(versions, list) or not set(versions) & set(REVIEW_VERSIONS):
        problems.append(Problem(f"{path}.admissionReviewVersions", f"Invalid value: "
                                f"{json.dumps(versions)}: must include at least one of "
                                "v1, v1beta1"))
    if hook.get("sideEffects") is None:
        problems.append(Problem(f"{path}.sideEffects", "Required value: must specify one "
                                "of None, NoneOnDryRun"))
    enums = {**_ENUMS, "reinvocationPolicy": ("Never", "IfNeeded")} if mutating else _ENUMS
    for key, allowed in enums.items():
        if hook.get(key) is not None and hook[key] not in allowed:
            problems.append(_unsupported(f"{path}.{key}", hook[key], allowed))
    timeout = hook.get("timeoutSeconds")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 30:
        problems.append(Problem(f"{path}.timeoutSeconds", f"Invalid value: {json.dumps(timeout)}"
                                ": the timeout value must be between 1 and 30 seconds"))
    if hook.get("matchConditions"):
        problems.append(Problem(f"{path}.matchConditions", "Forbidden: CEL match conditions "
                                "are not emulated by the test API server"))
    rules = hook.get("rules") or []
    for index, rule in enumerate(rules if isinstance(rules, list) else [None]):
        problems += _rule_problems(rule, f"{path}.rules[{index}]")
    for key in ("namespaceSelector", "objectSelector"):
        problems += _selector_problems(hook.get(key), f"{path}.{key}")
    return problems + _client_problems(hook.get("clientConfig"), f"{path}.clientConfig")


def _unsupported(path: str, value: Any, allowed: tuple[str, ...]) -> Problem:
    supported = ", ".join(f'"{a}"' for a in allowed)
    return Problem(path, f"Unsupported value: {json.dumps(value)}: supported values: {supported}")


def _rule_problems(rule: Any, path: str) -> list[Problem]:
    if not isinstance(rule, dict):
        return [Problem(path, "Invalid value: must be an object")]
    problems = []
    for key in ("operations", "apiGroups", "apiVersions", "resources"):
        values = rule.get(key)
        if not values or not isinstance(values, list):
            problems.append(Problem(f"{path}.{key}", "Required value"))
        elif "*" in values and len(values) > 1:
            problems.append(Problem(f"{path}.{key}", f"Invalid value: {json.dumps(values)}: "
                                    "if '*' is present, must not specify other values"))
    for index, operation in enumerate(rule.get("operations") or []):
        if operation not in _OPERATIONS:
            problems.append(_unsupported(f"{path}.operations[{index}]", operation, _OPERATIONS))
    resources = rule.get("resources") or []
    if "*/*" in resources and len(resources) > 1:
        problems.append(Problem(f"{path}.resources", "Invalid value: if '*/*' is present, "
                                "must not specify other resources"))
    for index, resource in enumerate(resources):
        if not resource or not isinstance(resource, str):
            problems.append(Problem(f"{path}.resources[{index}]", "Required value"))
    if rule.get("scope") not in (None, "Cluster", "Namespaced", "*"):
        problems.append(_unsupported(f"{path}.scope", rule["scope"],
                                     ("Cluster", "Namespaced", "*")))
    return problems


def _selector_problems(selector: Any, path: str) -> list[Problem]:
    if selector is None:
        return []
    if not isinstance(selector, dict):
        return [Problem(path, "Invalid value: must be a label selector")]
    problems = [Problem(f"{path}.matchLabels", f"Invalid value: {json.dumps(value)}: must be "
                        "a string") for value in (selector.get("matchLabels") or {}).values()
                if not isinstance(value, str)]
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{index}]"
        operator, values = expression.get("operator"), expression.get("values") or []
        if not expression.get("key"):
            problems.append(Problem(f"{where}.key", "Required value"))
        if operator in ("In", "NotIn") and not values:
            problems.append(Problem(f"{where}.values", "Required value: must be specified "
                                    "when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist") and values:
            problems.append(Problem(f"{where}.values", "Forbidden: may not be specified when "
                                    "`operator` is 'Exists' or 'DoesNotExist'"))
        elif operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            problems.append(_unsupported(f"{where}.operator", operator,
                                         ("In", "NotIn", "Exists", "DoesNotExist")))
    return problems


def _client_problems(config: Any, path: str) -> list[Problem]:
    if not isinstance(config, dict):
        return [Problem(path, "Required value")]
    url, service = config.get("url"), config.get("service")
    if (url is None) == (service is None):
        return [Problem(path, "Required value: exactly one of url or service is required")]
    problems = []
    if url is not None:
        problems += _url_problems(url, f"{path}.url")
    if isinstance(service, dict):
        for key in ("namespace", "name"):
            if not service.get(key):
                problems.append(Problem(f"{path}.service.{key}", "Required value"))
        if service.get("path") and not str(service["path"]).startswith("/"):
            problems.append(Problem(f"{path}.service.path", f"Invalid value: "
                                    f"{json.dumps(service['path'])}: must start with a '/'"))
        port = service.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(Problem(f"{path}.service.port", f"Invalid value: {json.dumps(port)}"
                                    ": port is not valid: must be between 1 and 65535"))
    elif service is not None:
        problems.append(Problem(f"{path}.service", "Invalid value: must be an object"))
    if config.get("caBundle") is not None:
        try:
            base64.b64decode(config["caBundle"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            problems.append(Problem(f"{path}.caBundle", "Invalid value: not base64"))
    return problems


def _url_problems(url: Any, path: str) -> list[Problem]:
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    # The real server takes https only; http is let through so tests need no certificates.
    why = ("must be a URL" if parts is None else
           "'https' is the only allowed URL scheme (and 'http' in the test API server)"
           if parts.scheme not in ("https", "http") else
           "host must be specified" if not parts.hostname else
           "user information is not permitted in the URL" if parts.username is not None else
           "fragments are not permitted in the URL" if parts.fragment else
           "query parameters are not permitted in the URL" if parts.query else None)
    return [] if why is None else [Problem(path, f"Invalid value: {json.dumps(url)}: {why}")]


# ---------------------------------------------------------------------- matching

@dataclass
class Attributes:
    """An API request as admission sees it: the AdmissionReview's `request` but for the
    objects, and the warnings the webhooks send back for the client."""

    group: str
    version: str
    kind: str
    resource: str
    """The plural, as in the rules."""
    subresource: str
    operation: str
    """CREATE, UPDATE or DELETE."""
    name: str
    namespace: str
    """Empty for a cluster-scoped object; a Namespace's own name for a Namespace."""
    user: dict[str, Any]
    options: dict[str, Any]
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def is_namespace(self) -> bool:
        return (self.group, self.resource) == ("", "namespaces")


def rule_matches(rule: Mapping[str, Any], request: Attributes) -> bool:
    """Whether one of a webhook's `rules` covers the request. `resource/sub` forms: `*`
    stands for any resource and, after the slash, any subresource or none (so `pods/*`
    also covers `pods`, as in kube-apiserver); without a slash, no subresource."""
    return (_scope_matches(rule.get("scope") or "*", request)
            and _listed(rule.get("operations"), request.operation)
            and _listed(rule.get("apiGroups"), request.group)
            and _listed(rule.get("apiVersions"), request.version)
            and any(_resource_matches(pattern, request) for pattern in rule.get("resources") or []))


def _listed(values: Any, wanted: str) -> bool:
    return any(value in ("*", wanted) for value in values or [])


def _resource_matches(pattern: str, request: Attributes) -> bool:
    resource, _, subresource = pattern.partition("/")
    return resource in ("*", request.resource) and subresource in ("*", request.subresource)


def _scope_matches(scope: str, request: Attributes) -> bool:
    # A Namespace is cluster-scoped, though its requests carry its name as their namespace.
    if scope == "Namespaced":
        return not request.is_namespace and request.namespace != ""
    if scope == "Cluster":
        return request.is_namespace or request.namespace == ""
    return True


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (`matchLabels`, `matchExpressions`) selects `labels`; an
    empty one selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, values = expression["key"], expression.get("values") or []
        held = {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels,
                "DoesNotExist": key not in labels}[expression["operator"]]
        if not held:
            return False
    return True


def _empty(selector: Mapping[str, Any] | None) -> bool:
    return not selector or not (selector.get("matchLabels") or selector.get("matchExpressions"))


def _labels(obj: Any) -> dict[str, str]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


# ---------------------------------------------------------------------- calling

class CallFailedError(Exception):
    """A webhook could not be called, or answered what is not an AdmissionReview: its
    `failurePolicy` decides (the real server's ErrCallingWebhook)."""

    def __init__(self, webhook: str, reason: str) -> None:
        super().__init__(f'failed calling webhook "{webhook}": {reason}')


@dataclass(frozen=True)
class Admission:
    """The dynamic admission of one server, over the configurations it stores."""

    configurations: Mapping[str, Mapping[str, dict[str, Any]]]
    """The stored configurations by plural, then name: the server's own, only read."""
    namespace: Callable[[str], dict[str, Any] | None]
    """The stored Namespace of that name, if there is one."""
    service_urls: Mapping[tuple[str, str, int], str]
    """(namespace, name, port) of a `clientConfig.service` → the base URL serving it."""

    async def mutate(self, request: Attributes, obj: dict[str, Any] | None,
                     old: dict[str, Any] | None) -> dict[str, Any] | None:
        """`obj` as the mutating webhooks that match leave it, called one after the other;
        raises the server's error if one denies, or fails and may not be ignored."""
        for hook in self._webhooks(MUTATING):
            if not self._matches(hook, request, obj, old):
                continue
            try:
                answer: dict[str, Any] | Exception = await self._call(
                    hook, request, obj, old, mutating=True)
            except CallFailedError as e:
                answer = e
            patch = self._verdict(hook, request, answer, mutating=True)
            if not patch:
                continue
            if obj is None:  # a DELETE: there is nothing to patch
                raise _internal(f'admission webhook "{hook["name"]}" attempted to modify the '
                                "object, which is not supported for this operation")
            try:
                obj = jsonpatch.apply_patch(obj, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise _internal(str(e)) from None
        return obj

    async def validate(self, request: Attributes, obj: dict[str, Any] | None,
                       old: dict[str, Any] | None) -> None:
        """Call the validating webhooks that match, all at once as the real server does;
        raise the error of the first (in configuration order) that denies or fails."""
        hooks = [hook for hook in self._webhooks(VALIDATING)
                 if self._matches(hook, request, obj, old)]
        if not hooks:
            return
        answers = await asyncio.gather(
            *(self._call(hook, request, obj, old, mutating=False) for hook in hooks),
            return_exceptions=True)
        errors = []
        for hook, answer in zip(hooks, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer
            try:
                self._verdict(hook, request, answer, mutating=False)
            except KubernetesError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _webhooks(self, plural: str) -> list[dict[str, Any]]:
        configurations = self.configurations.get(plural) or {}
        return [hook for _, configuration in sorted(configurations.items())
                for hook in configuration.get("webhooks") or []]

    def _matches(self, hook: dict[str, Any], request: Attributes, obj: dict[str, Any] | None,
                 old: dict[str, Any] | None) -> bool:
        if not any(rule_matches(rule, request) for rule in hook.get("rules") or []):
            return False
        if not self._in_namespace(hook.get("namespaceSelector"), request, obj):
            return False
        selector = hook.get("objectSelector")
        return _empty(selector) or any(o is not None and selects(selector, _labels(o))
                                       for o in (obj, old))

    def _in_namespace(self, selector: dict[str, Any] | None, request: Attributes,
                      obj: dict[str, Any] | None) -> bool:
        if not request.namespace and not request.is_namespace:
            return True  # a cluster-scoped object is never exempted by a namespace selector
        if _empty(selector):
            return True
        # A Namespace being written is matched on its new labels; any other request on
        # those of its stored namespace. The emulator needs no Namespace object for its
        # namespaces: where there is none, the namespace has no labels. Every namespace
        # has the name label the real server puts on each.
        if request.is_namespace and request.operation != "DELETE" and obj is not None:
            labels = _labels(obj)
        else:
            labels = _labels(self.namespace(request.namespace))
        return selects(selector, {**labels, NAME_LABEL: request.namespace})

    def _verdict(self, hook: dict[str, Any], request: Attributes,
                 answer: dict[str, Any] | Exception, *, mutating: bool) -> list[Any]:
        """The JSON patch of an allowed request (none for a validating webhook, or for a
        failed call that the failurePolicy ignores); raises the server's error for a
        denial, or for a failed call it does not ignore."""
        name = hook["name"]
        try:
            if isinstance(answer, Exception):
                raise answer
            request.warnings.extend(str(w) for w in answer.get("warnings") or [])
            if not answer.get("allowed"):
                raise _denied(name, answer.get("status"))
            return _patch(name, answer) if mutating else []
        except CallFailedError as e:
            if hook.get("failurePolicy") == "Ignore":
                return []
            raise _internal(str(e)) from None

    async def _call(self, hook: dict[str, Any], request: Attributes,
                    obj: dict[str, Any] | None, old: dict[str, Any] | None, *,
                    mutating: bool) -> dict[str, Any]:
        """POST the AdmissionReview, and the `response` of the one the webhook answers."""
        name = hook["name"]
        version = next((v for v in hook.get("admissionReviewVersions") or []
                        if v in REVIEW_VERSIONS), None)
        if version is None:
            raise CallFailedError(name, "webhook does not accept v1 or v1beta1 AdmissionReview")
        uid = str(uuid.uuid4())
        review = {"apiVersion": f"admission.k8s.io/{version}", "kind": "AdmissionReview",
                  "request": _review_request(uid, request, obj, old)}
        config = hook.get("clientConfig") or {}
        url, hostname = self._where(name, config)
        timeout = hook.get("timeoutSeconds") or 10
        url = f"{url}?timeout={timeout}s"  # as the real server tells webhooks its deadline
        tls = _tls(name, config) if url.startswith("https:") else None
        body = await _post(name, url, review, timeout=timeout, tls=tls, hostname=hostname)
        try:
            return _verified(body, version=version, uid=uid, mutating=mutating)
        except ValueError as e:
            raise CallFailedError(name, f"received invalid webhook response: {e}") from None

    def _where(self, webhook: str, config: dict[str, Any]) -> tuple[str, str | None]:
        """The URL to POST to, and for a service the name its certificate must hold."""
        if config.get("url"):
            return str(config["url"]), None
        service = config.get("service") or {}
        namespace, name = str(service.get("namespace")), str(service.get("name"))
        port, path = int(service.get("port") or 443), service.get("path") or ""
        base = self.service_urls.get((namespace, name, port))
        if base is None:
            raise CallFailedError(webhook, f'failed to call webhook: Post "https://{name}.'
                                  f'{namespace}.svc:{port}{path}": service "{name}" not found')
        return base.rstrip("/") + path, f"{name}.{namespace}.svc"


def _review_request(uid: str, request: Attributes, obj: dict[str, Any] | None,
                    old: dict[str, Any] | None) -> dict[str, Any]:
    kind = {"group": request.group, "version": request.version, "kind": request.kind}
    resource = {"group": request.group, "version": request.version,
                "resource": request.resource}
    review: dict[str, Any] = {
        "uid": uid, "kind": kind, "resource": resource, "requestKind": kind,
        "requestResource": resource, "operation": request.operation,
        "userInfo": request.user, "object": obj, "oldObject": old,
        "dryRun": request.dry_run, "options": request.options}
    # Left out when empty, as the real server's JSON omits them.
    for key, value in (("subResource", request.subresource),
                       ("requestSubResource", request.subresource),
                       ("name", request.name), ("namespace", request.namespace)):
        if value:
            review[key] = value
    return review


def _tls(webhook: str, config: dict[str, Any]) -> ssl.SSLContext:
    """Trust the `caBundle` only, when there is one; else the system's roots."""
    bundle = config.get("caBundle")
    if not bundle:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=base64.b64decode(bundle).decode("ascii"))
    except (ssl.SSLError, ValueError) as e:
        raise CallFailedError(webhook, "could not get REST client: unable to load root "
                              f"certificates: {e}") from None


async def _post(webhook: str, url: str, review: dict[str, Any], *, timeout: int,
                tls: ssl.SSLContext | None, hostname: str | None) -> Any:
    where = f'Post "{url}"'
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.post(url, json=review, ssl=tls if tls is not None else True,
                             server_hostname=hostname) as response:
            if response.status != 200:
                raise CallFailedError(webhook, f"failed to call webhook: {where}: the server "
                                      f"responded with the status code {response.status}")
            return await response.json(content_type=None)
    except TimeoutError:  # before OSError, which it is
        raise CallFailedError(webhook, f"failed to call webhook: {where}: context deadline "
                              "exceeded") from None
    except (aiohttp.ClientError, OSError) as e:
        raise CallFailedError(webhook, f"failed to call webhook: {where}: {e}") from None
    except ValueError as e:
        raise CallFailedError(webhook, f"received invalid webhook response: {e}") from None


def _verified(body: Any, *, version: str, uid: str, mutating: bool) -> dict[str, Any]:
    """The `response` of an AdmissionReview; ValueError saying why it is not a good one."""
    if not isinstance(body, dict) or not isinstance(body.get("response"), dict):
        raise ValueError("webhook response was absent")
    response: dict[str, Any] = body["response"]
    patch, patch_type = response.get("patch"), response.get("patchType")
    if version == "v1":
        if response.get("uid") != uid:
            raise ValueError(f'expected response.uid="{uid}", got "{response.get("uid")}"')
        if (body.get("apiVersion"), body.get("kind")) != ("admission.k8s.io/v1",
                                                          "AdmissionReview"):
            raise ValueError("expected webhook response of admission.k8s.io/v1, "
                             f"Kind=AdmissionReview, got {body.get('apiVersion')}, "
                             f"Kind={body.get('kind')}")
        if patch and not patch_type:
            raise ValueError("webhook returned response.patch but not response.patchType")
        if patch_type and not patch:
            raise ValueError("webhook returned response.patchType but not response.patch")
    if (patch or patch_type) and not mutating:
        raise ValueError("validating webhook may not return response.patch or "
                         "response.patchType")
    return response


def _patch(webhook: str, response: dict[str, Any]) -> list[Any]:
    """The JSON patch operations of a mutating webhook's answer."""
    if not response.get("patch"):
        return []
    patch_type = response.get("patchType") or "JSONPatch"  # v1beta1 may leave it out
    if patch_type != "JSONPatch":
        raise CallFailedError(webhook, f'unsupported patch type "{patch_type}"')
    try:
        patch = json.loads(base64.b64decode(response["patch"], validate=True))
    except (binascii.Error, TypeError, ValueError) as e:
        raise CallFailedError(webhook, f"received undecodable patch in webhook response: "
                              f"{e}") from None
    if not isinstance(patch, list):
        raise CallFailedError(webhook, "received undecodable patch in webhook response: "
                              "not a list of operations")
    return patch


def _denied(webhook: str, status: Any) -> KubernetesError:
    """The real server's answer to a denial: the webhook's status, with its code raised to
    at least 400 and its message prefixed with who denied."""
    status = status if isinstance(status, dict) else {}
    code = status.get("code")
    if not isinstance(code, int) or code < 400:
        code = 400
    denied = f'admission webhook "{webhook}" denied the request'
    message = (f"{denied}: {status['message']}" if status.get("message") else
               f"{denied}: {status['reason']}" if status.get("reason") else
               f"{denied} without explanation")
    return KubernetesError(status=code, reason=status.get("reason") or None, message=message,
                           details=status.get("details") or None)


def _internal(message: str) -> KubernetesError:
    return KubernetesError(status=500, reason="InternalError",
                           message=f"Internal error occurred: {message}",
                           details={"causes": [{"message": message}]})
