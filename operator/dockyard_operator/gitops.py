"""GitOps write-back: commit a stage's new image digests to its overlay in git, and push.

When a promotion moves digests into a stage delivered by GitOps, the cluster is not
patched: the digests go into `<path>/kustomization.yaml` on the stage's branch, and Argo CD
or Flux syncs the cluster from there. `write_back` fetches the branch, edits the file with
`kustomization.set_digests`, commits as the given author and pushes; `commit_message`
writes a message that says what moved where, and for which Promotion.

Blocking: `write_back` runs git and waits for it, each command bounded by a timeout, for
seconds when the remote is far. The operator calls it through `asyncio.to_thread`, never
on the event loop. `commit_message` is pure.

How: one bare clone per repository under `workdir`, reused (fetch, not clone, each time)
and locked while in use. The edit is written with git's plumbing — blob, tree, commit
from the fetched tip — so there is no work tree to leave half-edited and a symbolic link
in the repository cannot lead a write outside it. When the push is refused because the
branch moved, the edit is made again on the new tip rather than rebasing the old commit:
the edit is "these digests on these entries", which applies to any version of the file,
where a textual rebase would conflict on a neighbour's change to the same lines.

Limits: credentials come from the environment (`GIT_SSH_COMMAND` with a deploy key, or a
token in the repository URL); global and system git configuration is ignored on purpose,
so the machine's identity, signing or hooks never leak into a commit. The branch must
exist; only `kustomization.yaml` is edited (not `kustomization.yml` or `Kustomization`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from dockyard_operator.kustomization import (
    GitOpsError,
    ImagePin,
    InvalidArgumentError,
    KustomizationError,
    set_digests,
)

__all__ = [
    "Author", "ContentionError", "GitError", "GitOpsError", "ImagePin", "InvalidArgumentError",
    "KustomizationError", "WriteBackResult", "commit_message", "write_back",
]

FILE_NAME = "kustomization.yaml"
_SUBJECT_LIMIT = 72  # subjects stay under it: longer ones are cut in mail and web views
_REGULAR_FILE_MODES = ("100644", "100755")
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
# A push refused because the branch is no longer where our commit's parent is: refused
# by our git ("fetch first", "non-fast-forward") or, in a race, by the server's ref lock.
_MOVED = ("fetch first", "non-fast-forward", "cannot lock ref", "failed to update ref")


class GitError(GitOpsError):
    """Git could not fetch or push: the remote is unreachable, refuses us, or timed out."""

    temporary = True


class ContentionError(GitOpsError):
    """The branch moved between fetch and push on every attempt."""

    temporary = True


@dataclass(frozen=True)
class Author:
    """Who the commits are by: author and committer both."""

    name: str
    email: str

    def __post_init__(self) -> None:
        for part, value in (("name", self.name), ("email", self.email)):
            # git would silently strip `<`, `>` and line breaks and commit something else.
            if not value.strip() or any(c in value for c in "<>\n\r"):
                raise InvalidArgumentError(f"author {part} {value!r}: must be one line, "
                                           "without < or >")


@dataclass(frozen=True)
class WriteBackResult:
    """What `write_back` did."""

    commit: str | None
    """The pushed commit; None when the branch already had every digest."""
    changed: bool
    """Whether a commit was pushed."""
    attempts: int
    """Fetch-edit-push rounds used, 1 unless the branch moved under us."""


def commit_message(stage: str, pins: Sequence[ImagePin], promotion: str) -> str:
    """A commit message for promoting `pins` into `stage` by `promotion` (`namespace/name`).

    The subject says the stage and images in under 72 characters; the body lists each
    `image@digest` in full; a `Promotion:` trailer links back to the Kubernetes object.
    """
    namespace, slash, name = promotion.partition("/")
    if not (namespace and slash and name) or "/" in name or any(c.isspace() for c in promotion):
        raise InvalidArgumentError(f"promotion {promotion!r}: write namespace/name")
    if not pins or not stage or any(c.isspace() for c in stage):
        raise InvalidArgumentError("a commit message needs a stage name and at least one image")
    body = "\n".join(f"- {pin.name}@{pin.digest}" for pin in pins)
    return f"{_subject(stage, pins)}\n\n{body}\n\nStage: {stage}\nPromotion: {promotion}\n"


def _subject(stage: str, pins: Sequence[ImagePin]) -> str:
    """The most telling subject that fits: digest, then names, then a count."""
    shorts = [pin.name.rsplit("/", 1)[-1] for pin in pins]
    candidates = [f"{stage}: promote {', '.join(shorts)}", f"{stage}: promote {len(pins)} images"]
    if len(pins) == 1:
        # The digest's first 12 hex digits, as `docker images` shows an image id.
        candidates = [f"{stage}: promote {shorts[0]}@{pins[0].digest[:19]}", candidates[0]]
    fitting = [subject for subject in candidates if len(subject) < _SUBJECT_LIMIT]
    return fitting[0] if fitting else candidates[-1][:_SUBJECT_LIMIT - 2] + "…"


def write_back(*, repository: str, branch: str, path: str, pins: Sequence[ImagePin],
               message: str, author: Author, workdir: Path, attempts: int = 3,
               timeout: float = 120.0) -> WriteBackResult:
    """Commit `pins` to `<path>/kustomization.yaml` on `branch` of `repository` and push.

    `path` is the overlay directory, relative to the repository root. Tries `attempts`
    times when the branch moves between fetch and push; `timeout` bounds each git command.
    Raises `InvalidArgumentError`, `KustomizationError` (permanent), `GitError` or
    `ContentionError` (temporary: worth a retry later). Blocking.
    """
    file = _overlay_file(path)
    if not repository or repository.startswith("-"):
        raise InvalidArgumentError(f"repository {repository!r}: write a URL or a path")
    if attempts < 1 or not message.strip():
        raise InvalidArgumentError("write_back needs a commit message and at least one attempt")
    git = _Git(Path(os.sep), _environment(author), timeout)  # no repository needed yet
    _check_branch(git, branch)
    with _clone(git, workdir, repository) as git:
        for attempt in range(1, attempts + 1):
            tip = _fetch(git, repository, branch)
            commit = _commit(git, tip, file, pins, message)
            if commit is None:
                return WriteBackResult(commit=None, changed=False, attempts=attempt)
            if _push(git, repository, commit, branch):
                return WriteBackResult(commit=commit, changed=True, attempts=attempt)
    raise ContentionError(f"{_redact(repository)} {branch}: the branch moved between fetch "
                          f"and push {attempts} times in a row; try again later")


def _overlay_file(path: str) -> str:
    """`<path>/kustomization.yaml` inside the repository, or `InvalidArgumentError`."""
    overlay = PurePosixPath(path)
    if overlay.is_absolute() or ".." in overlay.parts or ".git" in overlay.parts \
            or "\\" in path or "\0" in path:
        raise InvalidArgumentError(f"path {path!r}: write a directory inside the repository, "
                                   "relative to its root, without '..' or '.git'")
    return str(overlay / FILE_NAME)


@dataclass(frozen=True)
class _Git:
    """git run in one bare clone, with the caller's identity and no one else's config."""

    directory: Path
    env: Mapping[str, str]
    timeout: float

    def run(self, *args: str, stdin: bytes = b"", env: Mapping[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = ["git", "-c", "commit.gpgsign=false", *args]
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, check=False,
                                  cwd=self.directory, timeout=self.timeout,
                                  env={**self.env, **(env or {})})
        except subprocess.TimeoutExpired as e:
            raise GitError(f"git {args[0]} took longer than {self.timeout:g}s") from e
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed: {_summary(done.stderr)}")
        return done

    def text(self, *args: str, stdin: bytes = b"", env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, stdin=stdin, env=env).stdout.decode().strip()


def _environment(author: Author) -> dict[str, str]:
    # GIT_* from our own environment could point git at another repository (GIT_DIR) or
    # inject configuration (GIT_CONFIG_COUNT): only the ssh command, which carries the
    # deploy key, is passed on.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("GIT_") or key == "GIT_SSH_COMMAND"}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")  # fail, never prompt
    env.update(
        LC_ALL="C",  # git's messages in English, as _push and _summary read them
        GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",  # a missing credential fails at once, not at the timeout
        GIT_LITERAL_PATHSPECS="1",  # a path is a path, never `:(glob)` magic
        GIT_AUTHOR_NAME=author.name, GIT_AUTHOR_EMAIL=author.email,
        GIT_COMMITTER_NAME=author.name, GIT_COMMITTER_EMAIL=author.email,
    )
    return env


@contextmanager
def _clone(git: _Git, workdir: Path, repository: str) -> Iterator[_Git]:
    """The bare clone of `repository` under `workdir`, created once, locked while in use.

    The lock keeps two write-backs to one repository (two promotions at once, on two
    threads) from fetching into the same refs together; it is an flock, which excludes
    separate opens within one process too.
    """
    digest = hashlib.sha256(repository.encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]", "-", _redact(repository).rstrip("/").rsplit("/")[-1])
    directory = workdir / f"{readable.removesuffix('.git')[:40]}-{digest}.git"
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "HEAD").exists():
            # `git init` in place is idempotent: a clone interrupted here is finished later.
            git.run("init", "--quiet", "--bare", str(directory))
        yield replace(git, directory=directory)


def _check_branch(git: _Git, branch: str) -> None:
    if branch.startswith("-") or git.run("check-ref-format", f"refs/heads/{branch}",
                                         check=False).returncode != 0:
        raise InvalidArgumentError(f"branch {branch!r}: not a valid branch name")


def _fetch(git: _Git, repository: str, branch: str) -> str:
    """Fetch `branch`; its tip commit."""
    tracking = f"refs/remotes/origin/{branch}"
    git.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", repository,
            f"+refs/heads/{branch}:{tracking}")
    return git.text("rev-parse", "--verify", "--end-of-options", f"{tracking}^{{commit}}")


def _commit(git: _Git, tip: str, file: str, pins: Sequence[ImagePin],
            message: str) -> str | None:
    """A commit on `tip` with `pins` written into `file`; None if `tip` has them all."""
    mode, blob = _regular_file(git, tip, file)
    try:
        text = git.run("cat-file", "blob", blob).stdout.decode()
    except UnicodeDecodeError as e:
        raise KustomizationError(f"{file}: not UTF-8 text") from e
    edited = set_digests(text, pins, source=file)
    if edited == text:
        return None
    # --no-filters: the bytes set_digests returned are the bytes committed.
    new_blob = git.text("hash-object", "-w", "--no-filters", "--stdin", stdin=edited.encode())
    with tempfile.TemporaryDirectory(prefix="dockyard-gitops-") as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}  # never the clone's own
        git.run("read-tree", tip, env=index)
        git.run("update-index", "--cacheinfo", f"{mode},{new_blob},{file}", env=index)
        tree = git.text("write-tree", env=index)
    body = message if message.endswith("\n") else message + "\n"
    return git.text("commit-tree", tree, "-p", tip, "-F", "-", stdin=body.encode())


def _regular_file(git: _Git, tip: str, file: str) -> tuple[str, str]:
    """The mode and blob of `file` at `tip`, which must be a regular file."""
    listing = git.run("ls-tree", "-z", tip, "--", file).stdout.decode()
    if not listing:
        # A symbolic link on the way is not followed: the file is then simply not there.
        raise KustomizationError(f"{file}: no such file on the branch (symbolic links "
                                 "are not followed)")
    mode, kind, rest = listing.split(" ", 2)
    if kind != "blob" or mode not in _REGULAR_FILE_MODES:
        raise KustomizationError(f"{file}: not a regular file (git mode {mode})")
    return mode, rest.split("\t", 1)[0]


def _push(git: _Git, repository: str, commit: str, branch: str) -> bool:
    """Push `commit` to `branch`: True if it landed, False if the branch moved first."""
    done = git.run("push", "--porcelain", repository, f"{commit}:refs/heads/{branch}",
                   check=False)
    if done.returncode == 0:
        return True
    refused = [line for line in done.stdout.decode(errors="replace").splitlines()
               if line.startswith("!")]
    if refused and all(any(why in line for why in _MOVED) for line in refused):
        return False
    detail = refused[0].rsplit("\t", 1)[-1] if refused else _summary(done.stderr)
    raise GitError(f"git push to {_redact(repository)} {branch} failed: {detail}")


def _summary(stderr: bytes) -> str:
    """git's complaint in one line, without hints, advice or credentials.

    What went wrong is git's first `fatal:` or `error:` line, with the line before it when
    that is the transport's own reason (ssh: "Connection refused"); the lines after are
    advice ("Please make sure you have the correct access rights").
    """
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()
             if line.strip() and not line.startswith("hint:")]
    errors = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "error:"))]
    picked = lines[-2:]
    if errors:
        first = errors[0]
        picked = lines[max(first - 1, 0):first + 1] + [lines[i] for i in errors[1:2]]
    return _redact("; ".join(picked))[:500] or "no message"


def _redact(text: str) -> str:
    """`https://user:token@host/…` without the user and token."""
    return _CREDENTIALS.sub(r"\1***@", text)
