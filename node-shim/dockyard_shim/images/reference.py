"""Image references (`busybox`, `ghcr.io/org/app:1.2`, `repo@sha256:…`), normalised as Docker does.

Grammar of distribution/reference (the library behind `docker pull`): an optional domain,
a path of lowercase components joined by `/`, an optional `:tag`, an optional `@digest`.
The first component is a domain only if it holds a `.` or a `:` or is `localhost`;
otherwise the domain is `docker.io`, and a one-component path on Docker Hub gets the
`library/` prefix. A reference with neither tag nor digest gets the tag `latest`. So
`busybox` is `docker.io/library/busybox:latest`, and `familiar()` turns it back into
`busybox:latest` for people.

As Docker, a bare 64-hex string is refused as a name: it would be mistaken for an image id.

Pure computation: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.images.digest import Digest, parse_digest

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOMAIN = "index.docker.io"  # what old Docker clients wrote for Docker Hub
_MAX_NAME = 255  # NameTotalLengthMax of distribution/reference: domain and path together

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
# ASCII: distribution/reference's \w is Go's, [0-9A-Za-z_]; Python's would admit "é" or "٣",
# tags no registry or Docker accepts.
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HEX64 = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: `str()` is the full form stored as an image's name."""

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def repository(self) -> str:
        """`domain/path`, without tag or digest."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form people type: `busybox:latest`, `me/app:1`, `ghcr.io/x/y:2`."""
        name = self.familiar_repository()
        if self.tag is not None:
            name += f":{self.tag}"
        if self.digest is not None:
            name += f"@{self.digest}"
        return name

    def familiar_repository(self) -> str:
        """The short repository: `busybox`, `me/app`, `ghcr.io/x/y`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        if self.path.startswith("library/") and self.path.count("/") == 1:
            return self.path.removeprefix("library/")
        if _names_a_domain(self.path.split("/", 1)[0]):
            # docker.io/a.b/app: "a.b/app" would be read back as registry a.b (Docker shows
            # it so all the same); a name we print must name the same image.
            return self.repository
        return self.path

    def with_tag(self, tag: str) -> Reference:
        """The same repository with `tag` and no digest."""
        if not _TAG.fullmatch(tag):
            raise InvalidArgumentError(f"invalid tag {tag!r}: use letters, digits, '_', '.' "
                                       "and '-', at most 128, not starting with '.' or '-'")
        return Reference(self.domain, self.path, tag, None)


def parse_reference(text: str) -> Reference:
    """Parse and normalise `text`; InvalidArgumentError saying what is wrong.

    >>> str(parse_reference("busybox"))
    'docker.io/library/busybox:latest'
    """
    if not isinstance(text, str) or not text:
        raise InvalidArgumentError("an image reference must be a non-empty string")
    if _HEX64.fullmatch(text):
        raise InvalidArgumentError(
            f"invalid reference {text!r}: a 64-character hex string is an image id, not a name")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, raw_digest = remainder.split("@", 1)
        digest = parse_digest(raw_digest, f"digest of reference {text!r}")
    tag = None
    slash, colon = remainder.rfind("/"), remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidArgumentError(
                f"invalid tag {tag!r} in {text!r}: use letters, digits, '_', '.' and '-', at "
                "most 128 characters, not starting with '.' or '-'")
    domain, path = _split_domain(remainder, text)
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            hint = ("repository names must be lowercase" if component.lower() != component
                    else "use lowercase letters, digits and single separators (. _ __ -)")
            raise InvalidArgumentError(f"invalid repository name {remainder!r} in {text!r}: "
                                       f"{hint}")
    if len(f"{domain}/{path}") > _MAX_NAME:
        raise InvalidArgumentError(f"repository name in {text!r} is longer than {_MAX_NAME}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def _split_domain(name: str, text: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not (sep and _names_a_domain(first)):
        domain, path = DEFAULT_DOMAIN, name
    else:
        if not _DOMAIN.fullmatch(first):
            raise InvalidArgumentError(f"invalid registry domain {first!r} in {text!r}")
        domain, path = first, rest
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if not path:
        raise InvalidArgumentError(f"invalid reference {text!r}: the repository is empty")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def _names_a_domain(first: str) -> bool:
    """Whether the first component of a name is a registry rather than a path component."""
    return "." in first or ":" in first or first == "localhost" or first.lower() != first
