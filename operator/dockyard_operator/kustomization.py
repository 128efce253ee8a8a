"""Image digests in a kustomization.yaml: set them, and keep everything people wrote.

`set_digests` takes the text of a stage overlay's `kustomization.yaml` and returns it with a
`digest:` on the `images:` entry of each pinned image. Purely text in, text out, no I/O:
`gitops` reads the file from git and commits what this returns.

It edits through ruamel.yaml's round-trip mode, so comments, key order, quoting and the
indentation style survive; text with every digest already in place comes back untouched,
byte for byte, so "nothing to commit" is a plain string comparison.

Limits: one YAML document per file; an entry matches on its exact `name` (the repository as
the manifests write it), with none of kustomize's looser matching; a change re-emits the
document, so spacing inside a line (`key:   value`) and a closing `...` are normalised.
The errors of GitOps write-back (`GitOpsError` and its categories) are defined here, at
the bottom, and re-exported by `gitops`.
"""

from __future__ import annotations

import copy
import io
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import ScalarString

from dockyard_api.fields import DIGEST_PATTERN

_DIGEST = re.compile(DIGEST_PATTERN)
_API_VERSIONS = frozenset({"kustomize.config.k8s.io/v1beta1"})
# `---` and `%` directives, with the comments around them: ruamel drops comments written
# before the document start marker, so this preamble is cut off and put back verbatim.
_PREAMBLE = re.compile(r"\A(?:[ \t]*(?:#[^\n]*)?\r?\n|%[^\n]*\n)*---[ \t]*(?:#[^\n]*)?\r?\n")
_KEY_ONLY = re.compile(r"^( *)[^\s#-][^#]*:[ \t]*(?:#.*)?$")
_ITEM = re.compile(r"^( *)-( +)")


class GitOpsError(RuntimeError):
    """GitOps write-back failed. `temporary`: whether trying again later can succeed."""

    temporary: ClassVar[bool] = False


class InvalidArgumentError(GitOpsError):
    """The caller asked for something malformed: a digest, an image name, a path, a branch."""


class KustomizationError(GitOpsError):
    """The file in the repository is not a Kustomization this module can edit.

    Permanent: a person has to fix the file; retrying reads the same content.
    """


@dataclass(frozen=True)
class ImagePin:
    """Run `digest` wherever the manifests name the image repository `name`."""

    name: str
    """The `images:` entry's `name`: the repository as manifests write it,
    `127.0.0.1:5000/shop/web`."""
    digest: str
    """`sha256:` and 64 lower-case hex digits."""

    def __post_init__(self) -> None:
        # The name becomes a YAML value and a line of a commit message: no whitespace, and
        # no tag or digest, which kustomize would never match against a manifest's image.
        if not self.name or any(c.isspace() or c == "@" for c in self.name):
            raise InvalidArgumentError(f"image name {self.name!r}: write the repository alone, "
                                       "without whitespace or a digest")
        if not _DIGEST.match(self.digest):
            raise InvalidArgumentError(f"image {self.name}: digest {self.digest!r} is not "
                                       "sha256: followed by 64 lower-case hex digits")


def set_digests(text: str, pins: Sequence[ImagePin], *,
                source: str = "kustomization.yaml") -> str:
    """`text` with each pin's digest on its `images:` entry; `text` itself if all are set.

    `source` names the file in error messages. Raises `InvalidArgumentError` for two pins of one
    image and `KustomizationError` for a document that is not a Kustomization.
    """
    _check_unique(pins)
    if not pins:
        return text
    match = _PREAMBLE.match(text)
    preamble, body = (match.group(), text[match.end():]) if match else ("", text)
    yaml = _round_trip(body)
    document = _load(yaml, body, source, first_line=preamble.count("\n") + 1)
    entries = _entries(document, source)
    changed = [_pin(document, entries, pin) for pin in pins]
    if not any(changed):
        return text
    return preamble + _dump(yaml, document, like=text)


def _check_unique(pins: Sequence[ImagePin]) -> None:
    names = [pin.name for pin in pins]
    for name in {name for name in names if names.count(name) > 1}:
        raise InvalidArgumentError(f"image {name} is pinned twice; give one digest per image")


def _round_trip(body: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line someone wrote on one line
    mapping, sequence, offset = _indentation(body)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _indentation(body: str) -> tuple[int, int, int]:
    """The indentation the author used: (mapping, sequence, dash offset), as ruamel counts.

    ruamel writes one style for the whole file, so it is guessed from the first nested
    mapping and the first block sequence. The default is what `kustomize edit` writes.
    """
    lines = [line for line in body.splitlines() if line.strip()
             and not line.lstrip().startswith("#")]
    mapping, sequence = 0, (0, 0)
    for line, following in itertools.pairwise(lines):
        key = _KEY_ONLY.match(line)
        if key is None:
            continue
        parent, item = len(key.group(1)), _ITEM.match(following)
        if item is not None and not sequence[0]:
            offset = len(item.group(1)) - parent
            sequence = (offset + 1 + len(item.group(2)), offset)
        elif item is None and not mapping:
            mapping = len(following) - len(following.lstrip(" ")) - parent
    mapping = mapping if mapping > 0 else 2
    # ruamel needs room for the dash and a space between the offset and the content.
    indent, offset = sequence if sequence[0] >= sequence[1] + 2 >= 2 else (2, 0)
    return mapping, indent, offset


def _load(yaml: YAML, body: str, source: str, first_line: int) -> Any:
    try:
        return yaml.load(body)
    except YAMLError as e:
        where = ""
        if isinstance(e, MarkedYAMLError) and e.problem_mark is not None:
            where = f" (line {e.problem_mark.line + first_line})"
        problem = e.problem if isinstance(e, MarkedYAMLError) and e.problem else str(e)
        raise KustomizationError(f"{source}: not a single YAML document: "
                                 f"{problem}{where}") from e


def _entries(document: Any, source: str) -> dict[str, CommentedMap]:
    """The `images:` entries by name, after checking the document is a Kustomization."""
    if not isinstance(document, CommentedMap):
        what = "empty" if document is None else f"a {type(document).__name__}"
        raise KustomizationError(f"{source}: the document is {what}, not a Kustomization")
    # kustomize reads a file without apiVersion and kind as a Kustomization; so do we.
    kind, api_version = document.get("kind", "Kustomization"), document.get("apiVersion")
    if kind != "Kustomization":
        raise KustomizationError(f"{source}: kind: {kind!r}, expected Kustomization")
    if api_version is not None and api_version not in _API_VERSIONS:
        raise KustomizationError(f"{source}: apiVersion: {api_version!r}, expected "
                                 f"{' or '.join(sorted(_API_VERSIONS))}")
    images = document.get("images")
    if images is None:
        return {}
    if not isinstance(images, CommentedSeq):
        raise KustomizationError(f"{source}: images: must be a list of entries")
    entries: dict[str, CommentedMap] = {}
    for index, entry in enumerate(images):
        if not isinstance(entry, CommentedMap):
            raise KustomizationError(f"{source}: images[{index}]: must be a mapping")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise KustomizationError(f"{source}: images[{index}].name: must be a string")
        if name in entries:
            # Which of the two would kustomize apply? Neither guess is safe to edit.
            raise KustomizationError(f"{source}: images[{index}].name: {name} is listed twice")
        entries[name] = entry
    return entries


def _pin(document: CommentedMap, entries: dict[str, CommentedMap], pin: ImagePin) -> bool:
    """Set `pin` on its entry, or add one; whether the document changed."""
    entry = entries.get(pin.name)
    if entry is None:
        entries[pin.name] = _append_entry(document, pin)
        return True
    if entry.get("digest") == pin.digest and "newTag" not in entry:
        return False
    # A digest names the exact image, so a tag beside it is meaningless and misleading to
    # a reader; `newName` stays: it says where to pull from, which the digest does not.
    if "digest" in entry:
        entry["digest"] = _same_style(entry["digest"], pin.digest)
        if "newTag" in entry:
            _remove(entry, "newTag")
    elif "newTag" in entry:
        _replace(entry, "newTag", "digest", pin.digest)
    else:
        last = _last_key(entry)
        entry["digest"] = pin.digest
        _move_trailing_lines(entry, last, entry, "digest")
    return True


def _append_entry(document: CommentedMap, pin: ImagePin) -> CommentedMap:
    if not isinstance(document.get("images"), CommentedSeq):
        document["images"] = CommentedSeq()  # absent, or `images:` with nothing after it
    images = document["images"]
    new = CommentedMap([("name", pin.name), ("digest", pin.digest)])
    if images:
        _move_trailing_lines(images[-1], _last_key(images[-1]), new, "digest")
    images.append(new)
    return new


def _same_style(old: object, new: str) -> str:
    """`new` quoted as `old` was: a value someone wrote in quotes stays in quotes."""
    return type(old)(new) if isinstance(old, ScalarString) else new


def _last_key(mapping: CommentedMap) -> Any:
    return next(reversed(mapping))


def _replace(mapping: CommentedMap, old: str, new: str, value: str) -> None:
    """Put `new: value` where `old` was, so the diff shows one line changed."""
    position = list(mapping).index(old)
    lines = _detach_trailing_lines(mapping, old, keep_end_of_line=False)
    _delete(mapping, old)
    mapping.insert(position, new, value)
    _attach_trailing_lines(mapping, new, lines)


def _remove(mapping: CommentedMap, key: str) -> None:
    keys = list(mapping)
    position = keys.index(key)
    lines = _detach_trailing_lines(mapping, key, keep_end_of_line=False)
    _delete(mapping, key)
    if position > 0:
        _attach_trailing_lines(mapping, keys[position - 1], lines)


def _delete(mapping: CommentedMap, key: Any) -> None:
    del mapping[key]
    mapping.ca.items.pop(key, None)  # ruamel keeps a deleted key's comments otherwise


def _move_trailing_lines(old: CommentedMap, old_key: Any, new: CommentedMap,
                         new_key: Any) -> None:
    """Keep comment lines that followed the old last item after the one appended.

    ruamel hangs the comment lines between two items on the key before them; an item
    appended after that key would be written below them, under a comment that introduces
    whatever came next in the file.
    """
    _attach_trailing_lines(new, new_key, _detach_trailing_lines(old, old_key))


@dataclass(frozen=True)
class _Lines:
    template: Any
    """The comment token they were cut from, reused for its position marks."""
    text: str
    """Whole lines: blank lines and full-line comments."""


def _detach_trailing_lines(mapping: CommentedMap, key: Any, *,
                           keep_end_of_line: bool = True) -> _Lines | None:
    """Cut off the full lines hanging after `key`'s line; keep or drop its end-of-line comment.

    A removed key's end-of-line comment spoke about its value and goes with it.
    """
    slot = mapping.ca.items.get(key)
    token = slot[2] if slot and len(slot) > 2 else None
    if token is None:
        return None
    end_of_line, _, rest = token.value.partition("\n")
    if end_of_line and keep_end_of_line:
        token.value = end_of_line + "\n"
    else:
        slot[2] = None
    return _Lines(token, rest) if rest else None


def _attach_trailing_lines(mapping: CommentedMap, key: Any, lines: _Lines | None) -> None:
    if lines is None:
        return
    slot = mapping.ca.items.get(key)
    if slot and len(slot) > 2 and slot[2] is not None:
        slot[2].value += lines.text
        return
    token = copy.copy(lines.template)
    token.value = "\n" + lines.text  # the newline that ends `key`'s own line first
    mapping.ca.items[key] = [None, None, token, None]


def _dump(yaml: YAML, document: CommentedMap, *, like: str) -> str:
    out = io.StringIO()
    yaml.dump(document, out)
    text = out.getvalue()
    if not like.endswith("\n"):
        text = text.removesuffix("\n")
    # ruamel writes "\n"; a file written with Windows line ends keeps them.
    return text.replace("\n", "\r\n") if "\r\n" in like else text
