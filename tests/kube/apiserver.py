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
- Leases (`coordination.k8s.io/v1`), Events (`v1`), and kopf's peering resources.

Not emulated (see docs/kube-emulator.md): PUT, strategic merge patch semantics (treated as
merge patches), field selectors other than `metadata.name`, admission webhooks, RBAC,
authentication, server-side apply, owner-reference garbage collection, namespace
lifecycle, pagination (`limit`/`continue`), and watch bookmarks.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import yaml
from kmock import KubernetesError, KubernetesScaffold, ResourceInfo, action, resource
from kmock._internal import rendering

from dockyard_api.server_validation import prune, schema_of, validate
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
)


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


@attrs.define(kw_only=True)
class ApiServer(KubernetesScaffold):
    """A Kubernetes API server in memory, for kopf and the tests (see the module)."""

    _kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict, init=False)
    _objects: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    _version: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last: int = attrs.field(default=0, init=False)
    # (resourceVersion, key, event, the object before a MODIFIED event or None)
    _history: list[tuple[int, Key, dict[str, Any], dict[str, Any] | None]] = attrs.field(
        factory=list, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in (*BUILTIN, *dockyard_kinds()):
            self.declare(kind)
        self.fallback[action.LIST] << self._serve_list
        self.fallback[action.WATCH] << self._serve_watch
        self.fallback[action.FETCH] << self._serve_fetch
        self.fallback[action.CREATE] << self._serve_create
        self.fallback[action.UPDATE] << self._serve_patch
        self.fallback[action.DELETE] << self._serve_delete

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock keeps every request ever served, and matches each new one against its
        # filters by walking that whole log (`request in view`): O(n) per request, which
        # made a burst of 200 containers take minutes. Our reactions are the catch-all
        # fallbacks above, and no test reads the log: keep only the request at hand.
        # (Synchronous up to here: the request being served is the log's last entry.)
        del self._requests[:-1]
        return await super()._handle(request)

    def declare(self, kind: Kind) -> None:
        """Serve `kind` (discovery and objects)."""
        self._kinds[kind.group, kind.plural] = kind
        self.resources[resource(kind.group, kind.version, kind.plural)] = ResourceInfo(
            namespaced=kind.namespaced, kind=kind.kind, singular=kind.kind.lower(),
            verbs={"create", "delete", "get", "list", "patch", "watch"},
            subresources={"status"} if kind.status else set())

    # ------------------------------------------------------------------ for the tests

    def get(self, plural: str, name: str, namespace: str | None = None, *,
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
        kind = self._kinds.get((request.resource.group, request.resource.plural or ""))
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
        if kind.schema is None:
            return obj
        if request.params.get("fieldValidation") != "Strict":
            obj = prune(obj, kind.schema)
        defaulted, problems = validate(obj, kind.schema, old)
        if problems:
            name = obj.get("metadata", {}).get("name", "")
            causes = [{"reason": "FieldValueInvalid", "field": p.path, "message": p.message}
                      for p in problems]
            raise _error(422, "Invalid", f'{kind.kind} "{name}" is invalid: '
                         + ", ".join(str(p) for p in problems),
                         name=name, group=kind.group, kind=kind.kind, causes=causes)
        return defaulted

    async def _serve_create(self, request: rendering.Request) -> dict[str, Any]:
        kind = self._kind(request)
        obj = copy.deepcopy(request.data or {})
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise _error(422, "Invalid", f"{kind.kind}: metadata.name: Required value")
        namespace = request.namespace or meta.get("namespace")
        if kind.namespaced:
            meta["namespace"] = namespace
        key = self._key(kind, namespace, meta["name"])
        if key in self._objects:
            raise _error(409, "AlreadyExists",
                         f'{kind.plural}.{kind.group} "{meta["name"]}" already exists',
                         name=meta["name"], group=kind.group, kind=kind.plural)
        if kind.status:
            obj.pop("status", None)  # as the real server does with a status subresource
        obj = self._validated(kind, obj, request)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        obj.setdefault("apiVersion", f"{kind.group}/{kind.version}".lstrip("/"))
        obj.setdefault("kind", kind.kind)
        self._stamp(obj)
        self._objects[key] = obj
        await self._record("ADDED", key, obj)
        return copy.deepcopy(obj)

    async def _serve_patch(self, request: rendering.Request) -> dict[str, Any]:
        kind, key, current = self._existing(request)
        patched = _patched(current, request)
        wanted = patched.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural}.'
                         f'{kind.group} "{request.name}": the object has been modified; '
                         "please apply your changes to the latest version and try again")
        updated = _written(kind, current, patched, to_status=request.subresource == "status")
        updated = self._validated(kind, updated, request, old=current)
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if updated == current:
            return copy.deepcopy(current)  # a no-op write changes no version
        if _spec(updated) != _spec(current):
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        self._stamp(updated)
        if updated["metadata"].get("deletionTimestamp") and \
                not updated["metadata"].get("finalizers"):
            del self._objects[key]
            await self._record("DELETED", key, updated)
            return copy.deepcopy(updated)
        self._objects[key] = updated
        await self._record("MODIFIED", key, updated, before=current)
        return copy.deepcopy(updated)

    async def _serve_delete(self, request: rendering.Request) -> dict[str, Any]:
        _, key, current = self._existing(request)
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                before = copy.deepcopy(current)
                current["metadata"]["deletionTimestamp"] = _now()
                self._stamp(current)
                await self._record("MODIFIED", key, current, before=before)
            return copy.deepcopy(current)
        del self._objects[key]
        self._stamp(current)
        await self._record("DELETED", key, current)
        return copy.deepcopy(current)

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
                seen = _as_seen(event, before, lambda obj, key=key: matches(key, obj))
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
    return _merge(copy.deepcopy(current), request.data or {})


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
