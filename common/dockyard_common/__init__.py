"""Shared foundations for every Dockyard component: version and logging.

Bottom layer: imports nothing else from Dockyard. Keep it tiny; anything with domain
meaning belongs in `dockyard_api` (the API models) or in a component.
"""

from dockyard_common.logs import configure_logging, get_logger
from dockyard_common.version import __version__

__all__ = ["__version__", "configure_logging", "get_logger"]
