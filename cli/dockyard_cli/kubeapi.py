"""How the cluster commands (`dockyard stages`, `dockyard promote`) reach the API server.

Found as kubectl finds it: `--kubeconfig`, else `$KUBECONFIG` (a list of files, merged: the
first file to name a cluster, user or context wins), else `~/.kube/config`, else, inside a
pod, its service account. `--context` picks a context other than the current one. The
credentials a kubeconfig user may hold: a bearer token or token file, a client
certificate, a user name and password, or an exec plugin (`aws eks get-token`…).

A small synchronous client over the standard library's HTTP: JSON in and out, JSON merge
patches, watches as lines of JSON. Light on purpose: the kubernetes library and our API
models each take some 0.7 s to import, which a command that makes three requests should
not pay; PyYAML reads the kubeconfig. No retries: the one write that must retry on a
conflict (an approval) says so itself.

Every error is a `KubeError` whose text is the one line the user sees: what was being done,
to which object, and the API server's own message (a webhook's denial, a validation error).
`cluster_options`, `connect` and `reported` are the click side the commands share.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import re
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from dockyard_common.hosts import is_loopback

GROUP = "dockyard.dev"
VERSION = "v1alpha1"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where a pod finds its service account's token, CA and namespace."""
TIMEOUT = 30.0
"""Seconds to wait for any one answer (a watch waits longer, see `Client.watch`)."""
MERGE_PATCH = "application/merge-patch+json"
_WARNING = re.compile(r'^\d{3} \S+ "((?:[^"\\]|\\.)*)"')


class KubeError(Exception):
    """Something went wrong talking to the cluster; the text is the line to show."""


class ConfigError(KubeError):
    """No API server or credentials to use: the kubeconfig is missing or incomplete."""


class UnreachableError(KubeError):
    """The API server did not answer: refused, a TLS failure, a timeout."""


class ApiError(KubeError):
    """The API server answered with an error: `status` is its HTTP code, `reason` the
    Status reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`…)."""

    def __init__(self, doing: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{doing}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    """404: the object (or the kind: CRDs not installed) does not exist."""


class ConflictError(ApiError):
    """409: the object changed since it was read (`Conflict`), or its name is taken
    (`AlreadyExists`)."""


@dataclass(frozen=True)
class Connection:
    """An API server and the credentials to use there."""

    server: str
    source: str
    """Where they came from, for messages: `context test of /home/me/.kube/config`."""
    user: str = ""
    """The kubeconfig's name for the user (`alice@prod`); empty in a pod."""
    namespace: str = ""
    """The context's namespace (a pod's own); empty when it sets none."""
    token: str = ""
    basic: str = ""
    """`user:password`, for the rare kubeconfig that still has them."""
    ca_file: str = ""
    ca_data: str = ""
    cert_file: str = ""
    key_file: str = ""
    cert_data: str = ""
    key_data: str = ""
    insecure: bool = False


# ------------------------------------------------------------------ finding the cluster

def connection(kubeconfig: str | None = None, context: str | None = None, *,
               environ: Mapping[str, str] | None = None) -> Connection:
    """The API server and credentials, found as kubectl finds them (see the module)."""
    env = os.environ if environ is None else environ
    files, looked = _kubeconfig_files(kubeconfig, env)
    if files:
        return _from_kubeconfig(files, context)
    if env.get("KUBERNETES_SERVICE_HOST"):
        if context:
            raise ConfigError(f"--context {context} needs a kubeconfig, and there is none "
                              f"({looked}); in a pod, the service account is used")
        return _in_cluster(env)
    raise ConfigError(f"no kubeconfig found ({looked}): pass --kubeconfig PATH, set "
                      "$KUBECONFIG, or write ~/.kube/config (kubectl config set-cluster …)")


def _kubeconfig_files(flag: str | None, env: Mapping[str, str]) -> tuple[list[Path], str]:
    """The kubeconfig files to merge, and what was looked at (for a message)."""
    if flag:
        path = Path(flag).expanduser()
        if not path.is_file():
            raise ConfigError(f"--kubeconfig {flag}: no such file")
        return [path], str(path)
    listed = env.get("KUBECONFIG", "")
    if listed:
        # As kubectl: files of the list that do not exist are skipped, not an error.
        paths = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
        return [p for p in paths if p.is_file()], f"$KUBECONFIG={listed}"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    default = home / ".kube" / "config"
    return ([default] if default.is_file() else []), f"{default} does not exist"


def _read(path: Path) -> dict[str, Any]:
    import yaml  # noqa: PLC0415 -- only with a kubeconfig to read

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the kubeconfig {path}: {' '.join(str(e).split())}"
                          ) from e
    if not isinstance(data, dict):
        raise ConfigError(f"the kubeconfig {path} is not a kubeconfig (no mapping at the top)")
    return data


Entry = tuple[dict[str, Any], Path]
"""A cluster, user or context of a kubeconfig, and the directory its paths are relative to."""


def _from_kubeconfig(files: list[Path], wanted: str | None) -> Connection:
    entries: dict[str, dict[str, Entry]] = {"clusters": {}, "users": {}, "contexts": {}}
    current = ""
    for path in files:
        data = _read(path)
        current = current or str(data.get("current-context") or "")
        for section, key in (("clusters", "cluster"), ("users", "user"),
                             ("contexts", "context")):
            for entry in data.get(section) or []:
                name = entry.get("name") if isinstance(entry, dict) else None
                if name and name not in entries[section]:
                    value = entry.get(key)
                    entries[section][str(name)] = (value if isinstance(value, dict) else {},
                                                   path.resolve().parent)
    where = ", ".join(map(str, files))
    contexts = entries["contexts"]
    name = wanted or current
    known = ", ".join(sorted(contexts)) or "none"
    if not name:
        raise ConfigError(f"{where} sets no current context: pass --context NAME "
                          f"(contexts: {known})")
    if name not in contexts:
        raise ConfigError(f"no context {name!r} in {where} (contexts: {known})")
    context = contexts[name][0]
    source = f"context {name} of {where}"
    cluster_name = str(context.get("cluster") or "")
    if cluster_name not in entries["clusters"]:
        raise ConfigError(f"{source} names the cluster {cluster_name!r}, which is not there")
    cluster, cluster_dir = entries["clusters"][cluster_name]
    server = str(cluster.get("server") or "")
    if urllib.parse.urlsplit(server).scheme not in ("https", "http"):
        raise ConfigError(f"the cluster {cluster_name!r} of {source} has no server "
                          f"https://HOST:PORT (it says {server!r})")
    user_name = str(context.get("user") or "")
    if user_name and user_name not in entries["users"]:
        raise ConfigError(f"{source} names the user {user_name!r}, which is not there")
    user, user_dir = entries["users"].get(user_name, ({}, cluster_dir))
    return Connection(
        server=server, source=source, user=user_name,
        namespace=str(context.get("namespace") or ""),
        ca_file=_path(cluster.get("certificate-authority"), cluster_dir),
        ca_data=_decoded(cluster.get("certificate-authority-data"), "certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        **_credentials(user, user_name, user_dir))


def _credentials(user: dict[str, Any], name: str, base: Path) -> dict[str, str]:
    """The Connection fields a kubeconfig user gives."""
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise ConfigError(f"the user {name!r} logs in with the auth-provider {provider!r}, "
                          "which kubectl itself no longer supports: use an exec plugin, a "
                          "token or a client certificate")
    found = {
        "token": str(user.get("token") or ""),
        "cert_file": _path(user.get("client-certificate"), base),
        "key_file": _path(user.get("client-key"), base),
        "cert_data": _decoded(user.get("client-certificate-data"), "client-certificate-data"),
        "key_data": _decoded(user.get("client-key-data"), "client-key-data"),
    }
    if not found["token"] and user.get("tokenFile"):
        token_file = _path(user["tokenFile"], base)
        try:
            found["token"] = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"the user {name!r}: cannot read its tokenFile: {e}") from e
    if user.get("username"):
        found["basic"] = f"{user['username']}:{user.get('password') or ''}"
    if user.get("exec") and not found["token"]:
        found.update(_exec_plugin(user["exec"], name, base))
    return found


def _exec_plugin(spec: dict[str, Any], name: str, base: Path) -> dict[str, str]:
    """Run the user's credential plugin (client.authentication.k8s.io): its token or
    client certificate. Non-interactive: a plugin that needs a terminal says so."""
    command = str(spec.get("command") or "")
    if not command:
        raise ConfigError(f"the user {name!r} has an exec plugin without a command")
    if os.sep in command and not os.path.isabs(command):
        command = str(base / command)  # as kubectl: relative to the kubeconfig
    version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    env = {**os.environ, **{str(e.get("name")): str(e.get("value", ""))
                            for e in spec.get("env") or [] if isinstance(e, dict)},
           "KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": version, "kind": "ExecCredential",
                                               "spec": {"interactive": False}})}
    args = [str(a) for a in spec.get("args") or []]
    try:
        done = subprocess.run([command, *args], capture_output=True, text=True, env=env,
                              timeout=60, check=False)
    except FileNotFoundError as e:
        hint = f": {' '.join(str(spec['installHint']).split())}" if spec.get("installHint") \
            else ""
        raise ConfigError(f"the user {name!r} logs in with {command}, which is not "
                          f"installed{hint}") from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"the user {name!r}: its credential plugin {command} failed: {e}"
                          ) from e
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [""])[-1]
        raise ConfigError(f"the user {name!r}: its credential plugin {command} exited with "
                          f"{done.returncode}: {said}")
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"the user {name!r}: its credential plugin {command} did not print "
                          "an ExecCredential") from e
    return {"token": str(status.get("token") or ""),
            "cert_data": str(status.get("clientCertificateData") or ""),
            "key_data": str(status.get("clientKeyData") or "")}


def _in_cluster(env: Mapping[str, str]) -> Connection:
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT") or "443"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    try:
        token = (SERVICE_ACCOUNT / "token").read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"in a pod (KUBERNETES_SERVICE_HOST is set) but without a service "
                          f"account token: {e}") from e
    namespace_file = SERVICE_ACCOUNT / "namespace"
    ca = SERVICE_ACCOUNT / "ca.crt"
    return Connection(
        server=f"https://{host}:{port}", source="the pod's service account", token=token,
        ca_file=str(ca) if ca.is_file() else "",
        namespace=namespace_file.read_text(encoding="utf-8").strip()
        if namespace_file.is_file() else "")


def _path(value: object, base: Path) -> str:
    if not value:
        return ""
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _decoded(value: object, what: str) -> str:
    if not value:
        return ""
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} in the kubeconfig is not base64 PEM: {e}") from e


# ------------------------------------------------------------------ requests

def path(plural: str, *, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The URL path of a Dockyard collection or object."""
    parts = ["/apis", GROUP, VERSION]
    if namespace:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Client:
    """Requests to one API server. `doing` names each request for its errors:
    `creating promotion prod/web-to-prod`."""

    def __init__(self, conn: Connection, *, debug: Callable[..., None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.connection = conn
        self._debug = debug
        self._warn = warn
        handlers: list[urllib.request.BaseHandler] = []
        if conn.server.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(conn)))
        if _loopback(conn.server):
            # Proxies from the environment serve the world, never this machine (as Go's
            # net/http, which kubectl uses, decides).
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, url: str, *, doing: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._json("GET", url, doing=doing)
        return answer

    def list(self, url: str, *, doing: str, params: Mapping[str, str] | None = None
             ) -> list[dict[str, Any]]:
        answer = self._json("GET", url, doing=doing, params=params)
        return list(answer.get("items") or [])

    def create(self, url: str, body: Mapping[str, Any], *, doing: str) -> dict[str, Any]:
        # Strict: a field this CLI writes that the CRD does not know is an error, not lost.
        answer: dict[str, Any] = self._json("POST", url, doing=doing, body=body,
                                            params={"fieldValidation": "Strict"})
        return answer

    def patch(self, url: str, body: Mapping[str, Any], *, doing: str) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386); a `metadata.resourceVersion` in it makes the
        write conditional (ConflictError if the object changed since)."""
        answer: dict[str, Any] = self._json("PATCH", url, doing=doing, body=body,
                                            content_type=MERGE_PATCH,
                                            params={"fieldValidation": "Strict"})
        return answer

    def watch(self, url: str, *, doing: str, params: Mapping[str, str], seconds: int
              ) -> Iterator[dict[str, Any]]:
        """The events of a watch that the server ends after `seconds`; it also ends
        early if the connection drops (watch again from the last resourceVersion)."""
        query = {**params, "watch": "true", "timeoutSeconds": str(seconds)}
        response = self._open("GET", url, doing=doing, params=query, timeout=seconds + 15)
        with response:
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException):
                    return
                if not line:
                    return
                if line.strip():
                    try:
                        event: dict[str, Any] = json.loads(line)
                    except ValueError as e:
                        raise KubeError(f"{doing}: the API server sent something that is not "
                                        f"a watch event: {line[:80]!r}") from e
                    yield event

    def _json(self, method: str, url: str, *, doing: str, body: Any = None,
              params: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> Any:
        response = self._open(method, url, doing=doing, body=body, params=params,
                              content_type=content_type)
        with response:
            try:
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                raise self._unreachable(doing, e) from e
        return json.loads(data) if data else {}

    def _open(self, method: str, url: str, *, doing: str, body: Any = None,
              params: Mapping[str, str] | None = None, content_type: str = "application/json",
              timeout: float = TIMEOUT) -> http.client.HTTPResponse:
        conn = self.connection
        full = conn.server.rstrip("/") + url
        if params:
            full += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": "dockyard"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        elif conn.basic:
            headers["Authorization"] = "Basic " + base64.b64encode(conn.basic.encode()).decode()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        # The scheme is http or https: `_from_kubeconfig` and `_in_cluster` make sure.
        request = urllib.request.Request(  # noqa: S310
            full, data=data, method=method, headers=headers)
        try:
            response: http.client.HTTPResponse = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            with e:
                self._log(method, full, e.code)
                self._warnings(e.headers)
                raise self._refused(doing, e) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise self._unreachable(doing, e) from e
        self._log(method, full, response.status)
        self._warnings(response.headers)
        return response

    def _log(self, method: str, url: str, status: int) -> None:
        if self._debug is not None:
            self._debug("api request", method=method, url=url, status=status)

    def _warnings(self, headers: Any) -> None:
        """Show the API server's `Warning` headers (a webhook's, a deprecation), as
        kubectl does."""
        if self._warn is None or headers is None:
            return
        for value in headers.get_all("Warning") or []:
            match = _WARNING.match(value)
            text = re.sub(r"\\(.)", r"\1", match[1]) if match else value
            self._warn(text)

    def _refused(self, doing: str, error: urllib.error.HTTPError) -> ApiError:
        try:
            raw = error.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        try:
            status = json.loads(raw)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("kind") == "Status":
            message, reason = str(status.get("message") or ""), str(status.get("reason") or "")
        else:
            text = raw.decode(errors="replace").strip()
            message, reason = (text.splitlines() or [str(error.reason)])[0], ""
        message = " ".join(message.split()) or f"{error.code} {error.reason}"
        if error.code == 401:
            message += f" (the API server does not accept the credentials of the " \
                       f"{self.connection.source})"
        kind = NotFoundError if error.code == 404 else \
            ConflictError if error.code == 409 else ApiError
        return kind(doing, error.code, reason, message)

    def _unreachable(self, doing: str, error: Exception) -> UnreachableError:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        text = " ".join(str(reason).split()) or type(reason).__name__
        return UnreachableError(f"{doing}: cannot reach the API server "
                                f"{self.connection.server} ({self.connection.source}): {text}")


def _loopback(server: str) -> bool:
    return is_loopback(urllib.parse.urlsplit(server).hostname or "")


def _ssl_context(conn: Connection) -> ssl.SSLContext:
    try:
        if conn.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=conn.ca_file or None,
                                                 cadata=conn.ca_data or None)
        if conn.cert_file:
            context.load_cert_chain(conn.cert_file, conn.key_file or None)
        elif conn.cert_data:
            _load_cert_data(context, conn.cert_data, conn.key_data)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"the TLS settings of the {conn.source} do not load: {e}") from e
    return context


def _load_cert_data(context: ssl.SSLContext, cert: str, key: str) -> None:
    """A client certificate given inline: ssl loads them from files only, so they are
    written to a private temporary directory for the moment it reads them."""
    with tempfile.TemporaryDirectory(prefix="dockyard-") as directory:
        cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
        for target, text in ((cert_path, cert), (key_path, key)):
            target.touch(mode=0o600)
            target.write_text(text, encoding="utf-8")
        context.load_cert_chain(str(cert_path), str(key_path) if key else None)


# ------------------------------------------------------------------ the click side

P = ParamSpec("P")
R = TypeVar("R")


def cluster_options(command: Callable[P, R]) -> Callable[P, R]:
    """`--kubeconfig` and `--context`, as kubectl has them."""
    command = click.option(
        "--context", metavar="NAME",
        help="The kubeconfig context to use (default: its current context).")(command)
    return click.option(
        "--kubeconfig", metavar="PATH",
        help="The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in a "
             "pod its service account).")(command)


def connect(kubeconfig: str | None, context: str | None) -> Client:
    """A client of the cluster the options and the environment name."""
    conn = connection(kubeconfig, context)
    root = click.get_current_context(silent=True)
    debug = None
    if root is not None and root.find_root().params.get("log_level") == "debug":
        from dockyard_common import get_logger  # noqa: PLC0415 -- structlog costs 150 ms

        debug = get_logger(__name__).debug
    return Client(conn, debug=debug, warn=lambda text: click.echo(f"Warning: {text}",
                                                                  err=True))


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a `KubeError` into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KubeError as e:
            raise click.ClickException(str(e)) from e

    return run
