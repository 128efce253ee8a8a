"""The Dockyard node shim: the low-level runtime and node agent on each node.

Layered bottom-up: kernel seam, mounts as data, snapshotter, archive, images, cgroups,
runtime, then daemon and agent. It imports the API package, never the operator. Empty until
the runtime issue lands: this file only reserves the package and its place in the import
layers.
"""
