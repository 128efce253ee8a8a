"""A set of manifests read together: every document validated, every object indexed by key.

`dockyard up -f A -f DIR` treats all the files it is given as one set: a Container may name
an Image or a Volume of another file, an object defined twice is an error, and one invalid
document refuses the whole set so that nothing on the machine changes.

Pure computation: the caller reads the files and passes their text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, NewType, TypeVar

from dockyard_api import (
    API_VERSION,
    Container,
    Image,
    InvalidManifestError,
    Resource,
    Volume,
    load_documents,
    parse,
)

ObjectKey = NewType("ObjectKey", str)
"""`namespace/name`: which object of a kind a manifest describes."""

DEFAULT_NAMESPACE = "default"
"""The namespace of an object whose manifest names none, as `kubectl apply` assumes."""

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True, order=True)
class SourcedProblem:
    """One thing wrong, located: the document (`file` or `file#index`) and the field path."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path or '<root>'}: {self.message}"


class ManifestSetError(ValueError):
    """The manifests cannot be acted on; `problems` lists every reason, in file order."""

    def __init__(self, problems: Iterable[SourcedProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Placed(Generic[R]):
    """A validated object and where it came from."""

    resource: R
    source: str
    namespace: str
    name: str

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(f"{self.namespace}/{self.name}")


@dataclass(frozen=True)
class Manifests:
    """The objects of a valid manifest set, by kind (only the kinds standalone mode uses)."""

    containers: tuple[Placed[Container], ...]
    """In the order of the files and of the documents in them."""
    images: Mapping[ObjectKey, Placed[Image]]
    volumes: Mapping[ObjectKey, Placed[Volume]]
    ignored: tuple[str, ...] = ()
    """What standalone mode skips: valid objects of the other kinds (`Stage dev (file)`) and
    documents of other API groups (`ConfigMap of v1 (file)`)."""

    @property
    def namespaces(self) -> frozenset[str]:
        """Every namespace an object of the set lives in: the scope of `up --prune`."""
        return frozenset({p.namespace for p in self.containers}
                         | {p.namespace for p in self.images.values()}
                         | {p.namespace for p in self.volumes.values()})


def load_manifests(files: Iterable[tuple[str, str]]) -> Manifests:
    """Validate the documents of `(file name, text)` pairs as one set.

    Documents of other API groups (a ConfigMap next to the Dockyard objects, say) are
    skipped, as `dockyard validate` skips them. Raise ManifestSetError with every problem of
    every document when any is found.
    """
    problems: list[SourcedProblem] = []
    containers: dict[ObjectKey, Placed[Container]] = {}
    images: dict[ObjectKey, Placed[Image]] = {}
    volumes: dict[ObjectKey, Placed[Volume]] = {}
    ignored: list[str] = []
    for file_name, text in files:
        for source, document in _documents(file_name, text, problems):
            foreign = _other_group(document)
            if foreign:
                ignored.append(f"{foreign} ({source})")
                continue
            try:
                resource = parse(document, source=source)
            except InvalidManifestError as e:
                problems += [SourcedProblem(source, p.path, p.message) for p in e.problems]
                continue
            if isinstance(resource, Container):
                _add(containers, resource, source, problems)
            elif isinstance(resource, Image):
                _add(images, resource, source, problems)
            elif isinstance(resource, Volume):
                _add(volumes, resource, source, problems)
            else:
                ignored.append(f"{resource.kind_info.kind} {resource.metadata.name} ({source})")
    if problems:
        raise ManifestSetError(problems)
    return Manifests(tuple(containers.values()), images, volumes, tuple(ignored))


def _documents(file_name: str, text: str, problems: list[SourcedProblem]
               ) -> list[tuple[str, object]]:
    """The documents of one file, each with its source name (`file#index` when several)."""
    try:
        documents = list(load_documents(text, source=file_name))
    except InvalidManifestError as e:
        problems += [SourcedProblem(file_name, p.path, p.message) for p in e.problems]
        return []
    if len(documents) == 1:
        return [(file_name, documents[0])]
    return [(f"{file_name}#{index}", document) for index, document in enumerate(documents)]


def _other_group(document: object) -> str:
    """`Kind of group/version` for a document of another API group, else ''."""
    if not isinstance(document, Mapping):
        return ""
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str) or api_version == API_VERSION:
        return ""  # ours, or a mistake that `parse` reports with its path
    return f"{document.get('kind', '?')} of {api_version}"


def _add(index: dict[ObjectKey, Placed[R]], resource: R, source: str,
         problems: list[SourcedProblem]) -> None:
    """Index `resource` by its key, or record why it cannot be."""
    kind, meta = resource.kind_info.kind, resource.metadata
    if meta.name is None:
        problems.append(SourcedProblem(
            source, "metadata.name",
            "dockyard up needs metadata.name: generateName needs an API server to pick "
            "the name"))
        return
    placed = Placed(resource, source, meta.namespace or DEFAULT_NAMESPACE, meta.name)
    earlier = index.get(placed.key)
    if earlier is not None:
        problems.append(SourcedProblem(
            source, "metadata.name",
            f"{kind} {placed.key} is defined twice: also in {earlier.source}; keep one "
            "definition"))
        return
    index[placed.key] = placed
