"""Layer archives: applying an OCI image layer to an overlayfs upper directory.

`apply_layer(stream, root, limits=Limits())` reads a layer blob (tar or tar+gzip), applies it
to the empty upper directory `root` of a fresh snapshot with whiteouts and opaque
directories in overlayfs form, and returns `ApplyStats`, diff_id included. Hostile archives
are the norm: nothing outside `root` is ever written, and every resource is bounded by
`Limits`.

Modules: `limits` (the bounds and the result, pure data), `streams` (decompression and
hashing), `tarstream` (a strict tar header parser), `paths` (names resolved under the root
through directory descriptors), `apply` (the filesystem side). Only this module's names are
public.
"""

from dockyard_shim.archive.apply import apply_layer
from dockyard_shim.archive.limits import ApplyStats, Limits

__all__ = ["ApplyStats", "Limits", "apply_layer"]
