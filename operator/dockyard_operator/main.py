"""The module `kopf run` loads: the operator's handlers in kopf's default registry.

    kopf run -m dockyard_operator.main --all-namespaces
"""

from __future__ import annotations

import kopf

from dockyard_operator.app import register

register(kopf.get_default_registry())
