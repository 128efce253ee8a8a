"""A small asyncio client of the Kubernetes API, for what kopf's handlers cannot do alone.

kopf writes the object a handler runs for; the operator and the node agent also read and
write others (Leases, DockyardNodes, the Containers of a lost node). This client does
exactly that over aiohttp (kopf's own HTTP library), with the credentials kopf logged in
with (`kopf.ConnectionInfo`): JSON in and out, merge patches, the status subresource, and
`ApiError` carrying the API server's status code and message.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server refused a request: `status` is its HTTP code (404, 409, 422…)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


FAILURES = (ApiError, aiohttp.ClientError, TimeoutError, OSError)
"""What a request may raise: refused, or the server not reached."""


def object_key(body: Mapping[str, Any]) -> str:
    """`namespace/name` of a served object (`None/name` for a cluster-scoped one)."""
    meta = body["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}"


def time(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes `Time` (RFC 3339 to the second, UTC) of `moment`, default now."""
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes `MicroTime` (a Lease's renewTime) of `moment`, default now."""
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def condition(kind: str, status: str, reason: str, message: str,
              moment: datetime.datetime | None = None) -> dict[str, Any]:
    """A status condition of type `kind` (`Ready`, `Succeeded`), its transition at
    `moment` (default now); written only when it changes."""
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": time(moment)}


WATCH_SECONDS = 300
"""How long one watch request lasts before kopf lists and watches again."""


def end_watches_in_time(settings: kopf.OperatorSettings) -> None:
    """End every watch after `WATCH_SECONDS` and list again: a stream that stalls silently
    (a dropped connection, a proxy) would otherwise never deliver again."""
    settings.watching.server_timeout = WATCH_SECONDS
    settings.watching.client_timeout = WATCH_SECONDS + 30


def path(group: str, version: str, plural: str, *, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:
    """The URL path of a collection or an object: `/apis/g/v/namespaces/ns/plural/name`."""
    parts = ["/api", version] if group == "" else ["/apis", group, version]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


class KubeClient:
    """Requests to one API server, over one connection pool; `close()` when done."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self._server = info.server.rstrip("/")
        self._headers = info.as_http_headers()
        self._ssl = _ssl_context(info)
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        """The decoded JSON answer, or ApiError."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._session.request(
                method, self._server + url, json=body, params=params, headers=headers,
                ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=30)) as response:
            answer = await response.json(content_type=None) if response.content_length != 0 \
                else None
            if response.status >= 400:
                message = answer.get("message", "") if isinstance(answer, dict) else ""
                raise ApiError(response.status, message or response.reason or "")
            return answer

    async def get(self, url: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("GET", url)
        return answer

    async def list(self, url: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        """The items of a collection, optionally filtered by a label selector."""
        params = {"labelSelector": label_selector} if label_selector else None
        answer = await self.request("GET", url, params=params)
        return list(answer.get("items") or [])

    async def create(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", url, body=dict(body))
        return answer

    async def patch(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): None removes a key."""
        answer: dict[str, Any] = await self.request("PATCH", url, body=dict(body),
                                                    content_type=MERGE_PATCH)
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def connection(memo: kopf.Memo, logger: kopf.Logger, settings: kopf.OperatorSettings
               ) -> kopf.ConnectionInfo:
    """The API server and credentials: those an embedder (a test) put in the memo under
    `connection`, else the in-cluster service account or the kubeconfig, found as
    kubectl finds them. Kept in the memo, so kopf's login and our client agree."""
    info = memo.get("connection")
    if info is None:
        info = kopf.login_via_client(logger=logger, settings=settings)
        if info is None:  # pragma: no cover -- the kubernetes library is a dependency
            raise kopf.PermanentError("no Kubernetes client library to log in with")
        memo["connection"] = info
    found: kopf.ConnectionInfo = info
    return found


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if not (info.ca_path or info.ca_data or info.certificate_path or info.certificate_data):
        return True  # the system's CAs
    context = ssl.create_default_context(
        cafile=_text(info.ca_path),
        cadata=_text(info.ca_data) if info.ca_data else None)
    if info.certificate_data or info.private_key_data:
        raise ValueError("a client certificate given as data is not supported: give its "
                         "file (client-certificate in the kubeconfig) or use a token")
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(_text(info.certificate_path) or "",
                                _text(info.private_key_path))
    return context


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
