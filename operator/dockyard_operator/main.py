"""The module `kopf run` loads: the operator's handlers in kopf's default registry.

    kopf run -m dockyard_operator.main --all-namespaces

`DOCKYARD_NODE_GRACE` (seconds, default 40) is how long a node may miss its heartbeat
before its containers move; `DOCKYARD_METRICS_LISTEN` (`HOST:PORT`, default
`0.0.0.0:8000`, empty to turn off) is where Prometheus scrapes /metrics. kopf's own
`--liveness http://0.0.0.0:8080/healthz` serves the health endpoint.
"""

from __future__ import annotations

import datetime
import os

import kopf

from dockyard_operator.app import register
from dockyard_operator.nodeloss import DEFAULT_GRACE

_grace = os.environ.get("DOCKYARD_NODE_GRACE")
register(kopf.get_default_registry(),
         grace=datetime.timedelta(seconds=float(_grace)) if _grace else DEFAULT_GRACE,
         metrics_listen=os.environ.get("DOCKYARD_METRICS_LISTEN", "0.0.0.0:8000"))
