"""The Dockyard operator: kopf handlers that reconcile Dockyard objects cluster-wide.

Scheduling, digest pinning, volume placement, stage policy and promotions live here as pure
functions (desired + observed state -> actions) with thin kopf handlers around them. It
imports the API package, never the node shim. Empty until the operator issue lands: this
file only reserves the package and its place in the import layers.
"""
