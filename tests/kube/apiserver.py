"""The test API server: kmock's Kubernetes scaffold with the object semantics the operator
relies on.

No kube-apiserver can be installed on these machines. kmock (by kopf's author) serves the
Kubernetes API's shape: discovery (/api, /apis, groups, versions, resources), request
parsing (list, watch, fetch, create, patch, delete of a resource, namespace, name and
subresource) and Kubernetes error bodies. Its own `KubernetesEmulator` keeps objects as
plain merged dicts; `ApiServer` replaces that state with what a real API server does and
our operator depends on:

- `metadata.uid`, `creationTimestamp`, and a `resourceVersion` from one counter that only
  grows; `generation` starts at 1 and grows when anything but `metadata` and `status`
  changes;
- the `status` subresource: writes to the object ignore `status`, writes to `/status`
  change nothing else;
- optimistic concurrency: a patch that names a `metadata.resourceVersion` other than the
  current one gets 409 Conflict; a create of an existing name gets 409 AlreadyExists;
- `labelSelector` on list and watch: an object modified out of a watch's selector is
  DELETED to it, one modified into it ADDED, as the real watch cache sends them; watch
  from a `resourceVersion` (the events after it), or from now with the current objects
  first; `timeoutSeconds`;
- finalizers: a delete sets `deletionTimestamp` while any remain; the object goes when
  the last one is removed;
- merge patches (RFC 7386: `null` deletes) and JSON patches;
- validation of every Dockyard object against the CRDs in `crds/` on create and on
  update (defaults applied, schema, list types, CEL rules), refused with 422 Invalid
  naming the fields, as the real server does; unknown fields are pruned, or refused
  with `?fieldValidation=Strict` (what kubectl sends by default);
- admission webhooks (`tests/kube/admission.py`): `ValidatingWebhookConfiguration` and
  `MutatingWebhookConfiguration` are stored (defaulted, checked); every create, write and
  delete of any other kind goes through the mutating webhooks that match, then defaults
  and validation, then the validating webhooks, and is stored only if all allow it; a
  write whose object changed while webhooks held it is tried again on the new object;
- who is asking: the bearer token selects a user of `users` (the `userInfo` webhooks
  get); no token, or an unknown one, is `system:anonymous`;
- `?dryRun=All`: everything but storing (no version, no watch event);
- Leases (`coordination.k8s.io/v1`), Events (`v1`), and kopf's peering resources.

Not emulated (see docs/kube-emulator.md): PUT, strategic merge patch semantics (treated as
merge patches), field selectors other than `metadata.name`, admission plugins, RBAC,
server-side apply, owner-reference garbage collection, namespace lifecycle, pagination
(`limit`/`continue`), and watch bookmarks.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import datetime
import functools
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import yaml
from kmock import KubernetesError, KubernetesScaffold, ResourceInfo, action, resource
from kmock._internal import rendering

from dockyard_api.manifests import Problem
from dockyard_api.server_validation import apply_defaults, prune, schema_of, validate
from tests.kube import admission
from tests.kube.admission import Admission, Attributes, UserInfo
from tests.kube.selectors import SelectorError, parse

CRDS = Path(__file__).resolve().parents[2] / "crds"
Key = tuple[str, str, str | None, str]
"""(group, plural, namespace or None, name)"""


@dataclass(frozen=True)
class Kind:
    """What the server knows of one resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool = False
    """Has the status subresource."""
    schema: dict[str, Any] | None = None
    """The CRD's openAPIV3Schema: objects are validated against it."""


BUILTIN = (
    Kind("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    Kind("", "v1", "events", "Event", namespaced=True),
    Kind("", "v1", "namespaces", "Namespace", namespaced=False),
    Kind("kopf.dev", "v1", "kopfpeerings", "KopfPeering", namespaced=True),
    Kind("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    Kind(admission.GROUP, "v1", admission.VALIDATING, "ValidatingWebhookConfiguration",
         namespaced=False),
    Kind(admission.GROUP, "v1", admission.MUTATING, "MutatingWebhookConfiguration",
         namespaced=False),
)
DEFAULT_USERS = {"test": UserInfo("test", groups=("system:masters",))}
"""The token the tests' kubeconfigs hold (`tests/operator/cluster.py`): an administrator."""
_WARNINGS: contextvars.ContextVar[list[str]] = contextvars.ContextVar("warnings")
"""The warnings of the request being served, for its `Warning` headers."""
_NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(/[^/]+)?/?")
_NAMESPACES_ALIAS = "namespaces-as-objects"
"""What kmock parses `/api/v1/namespaces[/NAME]` as, to serve them as Namespace objects."""


def dockyard_kinds() -> list[Kind]:
    """Our CRDs, read from crds/."""
    found = []
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        (version,) = [v for v in spec["versions"] if v.get("served")]
        found.append(Kind(spec["group"], version["name"], spec["names"]["plural"],
                          spec["names"]["kind"], spec["scope"] == "Namespaced",
                          status="status" in (version.get("subresources") or {}),
                          schema=schema_of(crd, version["name"])))
    return found


def _error(status: int, reason: str, message: str, **details: Any) -> KubernetesError:
    return KubernetesError(status=status, reason=reason, message=message, details=details)


def _refuse(kind: Kind, obj: dict[str, Any], problems: list[Problem]) -> None:
    """422 Invalid naming each problem's field, if there are any."""
    if not problems:
        return
    name = obj.get("metadata", {}).get("name", "")
    causes = [{"reason": "FieldValueInvalid", "field": p.path, "message": p.message}
              for p in problems]
    raise _error(422, "Invalid", f'{kind.kind} "{name}" is invalid: '
                 + ", ".join(str(p) for p in problems),
                 name=name, group=kind.group, kind=kind.kind, causes=causes)


def _dry_run(request: rendering.Request) -> bool:
    """Whether the request asks for a dry run (`?dryRun=All`, the only value there is)."""
    value = request.params.get("dryRun")
    if value is not None and value != "All":
        raise _error(400, "BadRequest",
                     f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return value is not None


def _options(request: rendering.Request, operation: str) -> dict[str, Any]:
    """The options of a request as webhooks get them: a DELETE's body (DeleteOptions)
    and the query's parameters, as `meta.k8s.io/v1` Create-, Update- or DeleteOptions."""
    options: dict[str, Any] = {}
    params = request.params
    if operation == "DELETE":
        options.update(request.data if isinstance(request.data, dict) else {})
        if "propagationPolicy" in params:
            options["propagationPolicy"] = params["propagationPolicy"]
        if params.get("gracePeriodSeconds", "").isdigit():
            options["gracePeriodSeconds"] = int(params["gracePeriodSeconds"])
    else:
        options.update((key, params[key]) for key in ("fieldManager", "fieldValidation")
                       if key in params)
    if params.get("dryRun"):
        options["dryRun"] = [request.params["dryRun"]]
    options.update(apiVersion="meta.k8s.io/v1", kind=f"{operation.title()}Options")
    return options


@attrs.define(kw_only=True)
class ApiServer(KubernetesScaffold):
    """A Kubernetes API server in memory, for kopf and the tests (see the module)."""

    users: Mapping[str, UserInfo] = attrs.field(factory=lambda: dict(DEFAULT_USERS))
    """Bearer token → the user a request with it is (its `userInfo` for webhooks). There
    is no RBAC: anyone, even anonymous, may do anything."""
    service_urls: Mapping[tuple[str, str, int], str] = attrs.field(factory=dict)
    """Where the webhooks behind a `clientConfig.service` listen: (namespace, name, port)
    → base URL, e.g. `{("hooks", "hook", 443): "https://127.0.0.1:8443"}`; the service's
    `path` is appended, and TLS verified for the name `hook.hooks.svc`."""
    _kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict, init=False)
    _objects: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    _version: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last: int = attrs.field(default=0, init=False)
    # (resourceVersion, key, event, the object before a MODIFIED event or None)
    _history: list[tuple[int, Key, dict[str, Any], dict[str, Any] | None]] = attrs.field(
        factory=list, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    # The stored webhook configurations by plural and name (the same dicts as in _objects).
    _webhooks: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _admission: Admission = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._admission = Admission(
            configurations=self._webhooks, service_urls=self.service_urls,
            namespace=lambda name: self._objects.get(("", "namespaces", None, name)))
        for kind in (*BUILTIN, *dockyard_kinds()):
            self.declare(kind)
        self.fallback[action.LIST] << self._serve_list
        self.fallback[action.WATCH] << self._serve_watch
        self.fallback[action.FETCH] << self._serve_fetch
        self.fallback[action.CREATE] << self._serve_create
        self.fallback[action.UPDATE] << self._serve_patch
        self.fallback[action.DELETE] << self._serve_delete

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock reads `/api/v1/namespaces/NAME` as the prefix of namespace NAME (and fails on
        # `/api/v1/namespaces`): give it a path it parses as the cluster-scoped resource the
        # Namespace objects are, and `_handle` gives the request its real resource back.
        if match := _NAMESPACE_PATH.fullmatch(raw_request.path):
            path = f"/api/v1/{_NAMESPACES_ALIAS}{match[1] or ''}"
            url = raw_request.rel_url
            raw_request = raw_request.clone(rel_url=url.with_path(path).with_query(url.query))
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock keeps every request ever served, and matches each new one against its
        # filters by walking that whole log (`request in view`): O(n) per request, which
        # made a burst of 200 containers take minutes. Our reactions are the catch-all
        # fallbacks above, and no test reads the log: keep only the request at hand.
        # (Synchronous up to here: the request being served is the log's last entry.)
        del self._requests[:-1]
        if request.resource is not None and request.resource.plural == _NAMESPACES_ALIAS:
            path = request.url.path.replace(_NAMESPACES_ALIAS, "namespaces", 1)
            request = attrs.evolve(request, resource=resource("", "v1", "namespaces"),
                                   url=request.url.with_path(path).with_query(request.url.query))
            self._requests[-1:] = [request]  # kmock matches reactions against its log
        warnings: list[str] = []
        reset = _WARNINGS.set(warnings)
        try:
            response: aiohttp.web.StreamResponse = await super()._handle(request)
        except KubernetesError as e:
            if not warnings:
                raise
            response = await self._render_error(e)  # a refusal carries the warnings too
        finally:
            _WARNINGS.reset(reset)
        if not response.prepared:  # watches are, and never warn
            for text in dict.fromkeys(warnings):
                escaped = text.replace("\\", "\\\\").replace('"', '\\"')
                response.headers.add("Warning", f'299 - "{escaped}"')
        return response

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # A Kubernetes Status as the real server writes it: kmock's would name the
        # exception's class for a missing reason (a webhook's denial may give none) and
        # fill empty details with a traceback.
        if not isinstance(exc, KubernetesError):
            return await super()._render_error(exc)
        status = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                  "message": exc.message or "", "code": exc.status}
        if exc.reason:
            status["reason"] = exc.reason
        if exc.details:
            status["details"] = exc.details
        return aiohttp.web.json_response(status, status=exc.status)

    def declare(self, kind: Kind) -> None:
        """Serve `kind` (discovery and objects)."""
        self._kinds[kind.group, kind.plural] = kind
        self.resources[resource(kind.group, kind.version, kind.plural)] = ResourceInfo(
            namespaced=kind.namespaced, kind=kind.kind, singular=kind.kind.lower(),
            verbs={"create", "delete", "get", "list", "patch", "watch"},
            subresources={"status"} if kind.status else set())

    # ------------------------------------------------------------------ for the tests

    def get(  # type: ignore[override]  # kmock's `get` is an HTTP GET; ours reads the store
            self, plural: str, name: str, namespace: str | None = None, *,
            group: str = "dockyard.dev") -> dict[str, Any] | None:
        """A stored object, or None."""
        found = self._objects.get((group, plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def versions(self, plural: str, name: str, namespace: str | None = None, *,
                 group: str = "dockyard.dev") -> list[dict[str, Any]]:
        """Every state the object has been in, oldest first (from the watch history)."""
        key = (group, plural, namespace, name)
        return [copy.deepcopy(event["object"]) for _, k, event, _ in self._history if k == key]

    def changes(self, since: int = 0) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """The (event type, object) of every write after the first `since` ones, and how
        many there are now: a cheap way for a benchmark to follow the whole cluster. The
        objects are the server's own: read them, do not change them."""
        return [(event["type"], event["object"]) for _, _, event, _ in
                self._history[since:]], len(self._history)

    def all(self, plural: str, *, group: str = "dockyard.dev") -> list[dict[str, Any]]:
        return [copy.deepcopy(obj) for (g, p, _, _), obj in self._objects.items()
                if (g, p) == (group, plural)]

    # ------------------------------------------------------------------ the API

    def _kind(self, request: rendering.Request) -> Kind:
        assert request.resource is not None
        kind = self._kinds.get((request.resource.group or "", request.resource.plural or ""))
        if kind is None:
            raise _error(404, "NotFound", f"the server could not find the requested resource "
                         f"{request.resource}")
        return kind

    def _key(self, kind: Kind, namespace: str | None, name: str) -> Key:
        return (kind.group, kind.plural, namespace if kind.namespaced else None, name)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _record(self, event: str, key: Key, obj: dict[str, Any],
                      before: dict[str, Any] | None = None) -> None:
        version = int(obj["metadata"]["resourceVersion"])
        self._history.append((version, key, {"type": event, "object": copy.deepcopy(obj)},
                              copy.deepcopy(before) if before is not None else None))
        async with self._condition():
            self._condition().notify_all()

    def _stamp(self, obj: dict[str, Any]) -> None:
        self._last = next(self._version)
        obj["metadata"]["resourceVersion"] = str(self._last)

    def _validated(self, kind: Kind, obj: dict[str, Any], request: rendering.Request,
                   old: dict[str, Any] | None = None) -> dict[str, Any]:
        """`obj` defaulted, and pruned of unknown fields unless the client asked for
        `fieldValidation=Strict` (kubectl's default), which refuses them; 422 if invalid.
        `old`: the stored object an update changes (validation ratchets against it)."""
        if kind.group == admission.GROUP:
            mutating = kind.plural == admission.MUTATING
            obj = admission.with_defaults(obj, mutating=mutating)
            _refuse(kind, obj, admission.configuration_problems(obj, mutating=mutating))
            return obj
        if kind.schema is None:
            return obj
        if request.params.get("fieldValidation") != "Strict":
            obj = prune(obj, kind.schema)
        defaulted, problems = validate(obj, kind.schema, old)
        _refuse(kind, obj, problems)
        return defaulted

    def _decoded(self, kind: Kind, obj: dict[str, Any],
                 request: rendering.Request) -> dict[str, Any]:
        """`obj` as the real server has it before admission: it prunes and defaults a
        custom resource as it decodes it (validation comes after the mutating webhooks)."""
        if kind.schema is None:
            return obj
        if request.params.get("fieldValidation") != "Strict":
            obj = prune(obj, kind.schema)
        defaulted: dict[str, Any] = apply_defaults(obj, kind.schema)
        return defaulted

    def _admitting(self, kind: Kind) -> bool:
        """Whether a write of `kind` goes to webhooks: never for the webhook configurations
        themselves (so a broken webhook cannot lock its own configuration), and not at
        all while none is configured (the common case, kept free)."""
        return kind.group != admission.GROUP and any(
            configuration.get("webhooks") for configurations in self._webhooks.values()
            for configuration in configurations.values())

    def _attributes(self, request: rendering.Request, kind: Kind, operation: str, *,
                    name: str, namespace: str | None) -> Attributes:
        if (kind.group, kind.plural) == ("", "namespaces"):
            namespace = name  # the real server's requests on a Namespace carry its name
        elif not kind.namespaced:
            namespace = None
        return Attributes(
            group=kind.group, version=kind.version, kind=kind.kind, resource=kind.plural,
            subresource=request.subresource or "", operation=operation, name=name,
            namespace=namespace or "", user=admission.identify(request.headers, self.users),
            options=_options(request, operation), dry_run=_dry_run(request),
            warnings=_WARNINGS.get([]))

    async def _serve_create(self, request: rendering.Request) -> dict[str, Any]:
        kind = self._kind(request)
        dry_run = _dry_run(request)
        obj = copy.deepcopy(request.data or {})
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace or meta.get("namespace")
        if kind.namespaced:
            meta["namespace"] = namespace
        obj.setdefault("apiVersion", f"{kind.group}/{kind.version}".lstrip("/"))
        obj.setdefault("kind", kind.kind)
        attributes = None
        if self._admitting(kind):
            # Before the name is generated: a create with generateName reaches the webhooks
            # without a name, as on a real server.
            attributes = self._attributes(request, kind, "CREATE", name=meta.get("name") or "",
                                          namespace=namespace)
            obj = await self._admission.mutate(attributes, self._decoded(kind, obj, request),
                                               None) or {}
            meta = obj.setdefault("metadata", {})
            if kind.namespaced:
                meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise _error(422, "Invalid", f"{kind.kind}: metadata.name: Required value")
        if kind.status:
            obj.pop("status", None)  # as the real server does with a status subresource
        obj = self._validated(kind, obj, request)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        meta.pop("resourceVersion", None)
        if attributes is not None:
            await self._admission.validate(attributes, obj, None)
        # Checked last, and with no wait until it is stored, as the real storage does.
        key = self._key(kind, namespace, meta["name"])
        if key in self._objects:
            raise _error(409, "AlreadyExists",
                         f'{kind.plural}.{kind.group} "{meta["name"]}" already exists',
                         name=meta["name"], group=kind.group, kind=kind.plural)
        if dry_run:
            return obj
        self._stamp(obj)
        self._put(key, obj)
        await self._record("ADDED", key, obj)
        return copy.deepcopy(obj)

    async def _serve_patch(self, request: rendering.Request) -> dict[str, Any]:
        # Webhooks are awaited between reading the object and storing it: if it changed
        # meanwhile, start again from what is stored now, as the real server's update
        # loop (GuaranteedUpdate) does. Without webhooks nothing waits in between.
        dry_run = _dry_run(request)
        while True:
            kind, key, current = self._existing(request)
            seen = current["metadata"]["resourceVersion"]
            patched = _patched(current, request)
            attributes = None
            if self._admitting(kind):
                attributes = self._attributes(request, kind, "UPDATE", name=request.name or "",
                                              namespace=request.namespace)
                patched = await self._admission.mutate(
                    attributes, self._decoded(kind, patched, request), current) or {}
                patched.setdefault("metadata", {})
            wanted = patched.get("metadata", {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                raise _error(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural}.'
                             f'{kind.group} "{request.name}": the object has been modified; '
                             "please apply your changes to the latest version and try again")
            updated = _written(kind, current, patched, to_status=request.subresource == "status")
            updated = self._validated(kind, updated, request, old=current)
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if attributes is not None:
                await self._admission.validate(attributes, updated, current)
                if self._changed_since(key, current, seen):
                    continue
            break
        if updated == current:
            return copy.deepcopy(current)  # a no-op write changes no version
        if _spec(updated) != _spec(current):
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        if dry_run:
            return updated
        self._stamp(updated)
        if updated["metadata"].get("deletionTimestamp") and \
                not updated["metadata"].get("finalizers"):
            self._drop(key)
            await self._record("DELETED", key, updated)
            return copy.deepcopy(updated)
        self._put(key, updated)
        await self._record("MODIFIED", key, updated, before=current)
        return copy.deepcopy(updated)

    async def _serve_delete(self, request: rendering.Request) -> dict[str, Any]:
        dry_run = _dry_run(request)
        while True:  # as in _serve_patch: again if the object changed during admission
            kind, key, current = self._existing(request)
            seen = current["metadata"]["resourceVersion"]
            if not self._admitting(kind):
                break
            attributes = self._attributes(request, kind, "DELETE", name=request.name or "",
                                          namespace=request.namespace)
            await self._admission.mutate(attributes, None, current)
            await self._admission.validate(attributes, None, current)
            if not self._changed_since(key, current, seen):
                break
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(current)
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = _now()
            if dry_run:
                return marked
            self._stamp(marked)
            self._put(key, marked)
            await self._record("MODIFIED", key, marked, before=current)
            return copy.deepcopy(marked)
        if dry_run:
            return copy.deepcopy(current)
        self._drop(key)
        self._stamp(current)
        await self._record("DELETED", key, current)
        return copy.deepcopy(current)

    def _changed_since(self, key: Key, current: dict[str, Any], seen: str) -> bool:
        """Whether the object read as `current`, at version `seen`, is no longer what is
        stored (written or deleted by another request)."""
        return self._objects.get(key) is not current or \
            current["metadata"]["resourceVersion"] != seen

    def _put(self, key: Key, obj: dict[str, Any]) -> None:
        self._objects[key] = obj
        if key[0] == admission.GROUP:
            self._webhooks.setdefault(key[1], {})[key[3]] = obj

    def _drop(self, key: Key) -> None:
        del self._objects[key]
        if key[0] == admission.GROUP:
            self._webhooks.get(key[1], {}).pop(key[3], None)

    async def _serve_fetch(self, request: rendering.Request) -> dict[str, Any]:
        return copy.deepcopy(self._existing(request)[2])

    def _existing(self, request: rendering.Request) -> tuple[Kind, Key, dict[str, Any]]:
        """The kind, key and stored object a request names; 404 if there is none."""
        kind = self._kind(request)
        key = self._key(kind, request.namespace, request.name or "")
        current = self._objects.get(key)
        if current is None:
            raise self._not_found(kind, request.name)
        return kind, key, current

    async def _serve_list(self, request: rendering.Request) -> dict[str, Any]:
        kind = self._kind(request)
        matches = self._matcher(kind, request)
        items = [copy.deepcopy(obj) for key, obj in self._objects.items() if matches(key, obj)]
        return {"apiVersion": f"{kind.group}/{kind.version}".lstrip("/"),
                "kind": f"{kind.kind}List", "metadata": {"resourceVersion": str(self._last)},
                "items": items}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        kind = self._kind(request)
        matches = self._matcher(kind, request)
        yield b""  # the head goes out now, even if nothing happens for a while
        since = request.params.get("resourceVersion")
        if since in (None, "", "0"):
            position = len(self._history)
            for key, obj in list(self._objects.items()):
                if matches(key, obj):
                    yield {"type": "ADDED", "object": copy.deepcopy(obj)}
        else:
            position = next((i for i, (version, *_) in enumerate(self._history)
                             if version > int(since)), len(self._history))
        timeout = request.params.get("timeoutSeconds")
        deadline = None if timeout is None else asyncio.get_running_loop().time() + int(timeout)
        while True:
            while position < len(self._history):
                _, key, event, before = self._history[position]
                position += 1
                seen = _as_seen(event, before, functools.partial(matches, key))
                if seen is not None:
                    yield seen
            left = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if left is not None and left <= 0:
                return
            async with self._condition():
                try:
                    await asyncio.wait_for(self._condition().wait(), left)
                except TimeoutError:
                    return

    def _matcher(self, kind: Kind, request: rendering.Request) -> Any:
        try:
            labels = parse(request.params.get("labelSelector", ""))
        except SelectorError as e:
            raise _error(400, "BadRequest", str(e)) from None
        field = request.params.get("fieldSelector", "")
        name = field.removeprefix("metadata.name=") if field.startswith("metadata.name=") \
            else None
        if field and name is None:
            raise _error(400, "BadRequest", f"field selector {field!r} is not emulated")
        namespace = request.namespace if kind.namespaced else None

        def matches(key: Key, obj: dict[str, Any]) -> bool:
            return (key[:2] == (kind.group, kind.plural)
                    and (namespace is None or key[2] == namespace)
                    and (name is None or key[3] == name)
                    and labels(obj.get("metadata", {}).get("labels") or {}))
        return matches

    def _not_found(self, kind: Kind, name: str | None) -> KubernetesError:
        return _error(404, "NotFound", f'{kind.plural}.{kind.group} "{name}" not found',
                      name=name, group=kind.group, kind=kind.plural)


def _as_seen(event: dict[str, Any], before: dict[str, Any] | None,
             matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """An event as a watch with a selector sees it, as the watch cache sends it: an object
    modified into the selector is ADDED, one modified out of it is DELETED (its last state
    that matched), others pass when they match."""
    now = matches(event["object"])
    if event["type"] != "MODIFIED" or before is None or now == matches(before):
        return copy.deepcopy(event) if now else None
    if now:
        return {"type": "ADDED", "object": copy.deepcopy(event["object"])}
    return {"type": "DELETED", "object": copy.deepcopy(before)}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _written(kind: Kind, current: dict[str, Any], patched: dict[str, Any], *,
             to_status: bool) -> dict[str, Any]:
    """What a write leaves of `patched`: with a status subresource, a write to `/status`
    changes the status only, and a write to the object everything but the status; the
    server's own metadata never changes."""
    if kind.status and to_status:
        updated = copy.deepcopy(current)
        updated.pop("status", None)
        if patched.get("status") is not None:
            updated["status"] = patched["status"]
        return updated
    updated = copy.deepcopy(patched)
    if kind.status:
        updated.pop("status", None)
        if "status" in current:
            updated["status"] = copy.deepcopy(current["status"])
    for fixed in ("uid", "creationTimestamp", "generation", "namespace", "name",
                  "deletionTimestamp"):
        if fixed in current["metadata"]:
            updated["metadata"][fixed] = current["metadata"][fixed]
        else:
            updated["metadata"].pop(fixed, None)
    return updated


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    """What `generation` counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _patched(current: dict[str, Any], request: rendering.Request) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type", "")
    if "json-patch" in content_type:
        try:
            result: dict[str, Any] = jsonpatch.apply_patch(current, request.data)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise _error(422, "Invalid", f"the JSON patch cannot be applied: {e}") from None
        return result
    merged: dict[str, Any] = _merge(copy.deepcopy(current), request.data or {})
    return merged


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch: objects merge, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target
