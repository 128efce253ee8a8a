"""The module `kopf run` loads: the operator's handlers in kopf's default registry.

    kopf run -m dockyard_operator.main --all-namespaces

`DOCKYARD_NODE_GRACE` (seconds, default 40) is how long a node may miss its heartbeat
before its containers move.
"""

from __future__ import annotations

import datetime
import os

import kopf

from dockyard_operator.app import register
from dockyard_operator.nodeloss import DEFAULT_GRACE

_grace = os.environ.get("DOCKYARD_NODE_GRACE")
register(kopf.get_default_registry(),
         grace=datetime.timedelta(seconds=float(_grace)) if _grace else DEFAULT_GRACE)
