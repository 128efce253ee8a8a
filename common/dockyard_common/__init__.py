"""Shared foundations for every Dockyard component: version and logging.

Bottom layer: imports nothing else from Dockyard. Keep it tiny (and cheap to import: the
CLI imports it on every start); anything with domain meaning belongs in `dockyard_api`
or in a component.
"""

from dockyard_common.logs import configure_logging, for_machines, get_logger
from dockyard_common.version import version

__all__ = ["configure_logging", "for_machines", "get_logger", "version"]
