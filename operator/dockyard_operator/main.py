"""The module `kopf run` loads: the operator's handlers in kopf's default registry.

    kopf run -m dockyard_operator.main --all-namespaces

Configured from the environment:
- `DOCKYARD_NODE_GRACE` (seconds, default 40): how long a node may miss its heartbeat
  before its containers move;
- `DOCKYARD_METRICS_LISTEN` (`HOST:PORT`, default `0.0.0.0:8000`, empty to turn off):
  where Prometheus scrapes /metrics;
- `DOCKYARD_WEBHOOK_LISTEN` (`HOST:PORT`, default empty: no webhooks): where the
  admission webhooks (stage policy, promotion approvals) are served, over HTTPS with
  `tls.crt` and `tls.key` from `DOCKYARD_WEBHOOK_CERT_DIR` (the chart mounts them), or
  plain HTTP when that is unset (an API server on the same machine only);
- `DOCKYARD_WEBHOOK_MANAGED` (a name, default empty): let kopf create the webhook
  configurations under that name, pointing at `DOCKYARD_WEBHOOK_HOST` (default the
  listen address); the chart ships its own instead.
kopf's own `--liveness http://0.0.0.0:8080/healthz` serves the health endpoint.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import kopf

from dockyard_operator.app import Webhooks, register
from dockyard_operator.nodeloss import DEFAULT_GRACE


def webhooks_from_environment() -> Webhooks | None:
    """The admission server the environment asks for (see the module docstring)."""
    listen = os.environ.get("DOCKYARD_WEBHOOK_LISTEN", "")
    if not listen:
        return None
    addr, _, port = listen.rpartition(":")
    if not addr or not port.isdigit():
        raise SystemExit(f"DOCKYARD_WEBHOOK_LISTEN={listen!r}: expected HOST:PORT, "
                         "for example 0.0.0.0:9443")
    certs = os.environ.get("DOCKYARD_WEBHOOK_CERT_DIR", "")
    host = os.environ.get("DOCKYARD_WEBHOOK_HOST") or None
    if certs:
        server = kopf.WebhookServer(addr=addr, port=int(port), host=host,
                                    certfile=str(Path(certs) / "tls.crt"),
                                    pkeyfile=str(Path(certs) / "tls.key"))
    else:
        server = kopf.WebhookServer(addr=addr, port=int(port), host=host, insecure=True)
    return Webhooks(server, os.environ.get("DOCKYARD_WEBHOOK_MANAGED", ""))


_grace = os.environ.get("DOCKYARD_NODE_GRACE")
register(kopf.get_default_registry(),
         grace=datetime.timedelta(seconds=float(_grace)) if _grace else DEFAULT_GRACE,
         metrics_listen=os.environ.get("DOCKYARD_METRICS_LISTEN", "0.0.0.0:8000"),
         webhooks=webhooks_from_environment())
