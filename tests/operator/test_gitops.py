"""GitOps write-back: the kustomization edit, and real git against local bare repositories.

No mocks: every git test pushes to a bare repository under tmp_path and reads the result
back with git. The test's own git runs with HOME in tmp_path and no system or global
configuration, so the machine's git setup cannot make a test pass or fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard_operator.gitops import (
    Author,
    ContentionError,
    GitError,
    ImagePin,
    InvalidArgumentError,
    KustomizationError,
    WriteBackResult,
    commit_message,
    write_back,
)
from dockyard_operator.kustomization import set_digests

WEB = "127.0.0.1:5000/shop/web"
API = "127.0.0.1:5000/shop/api"
OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64
BOT = Author("Dockyard", "dockyard@example.org")

STAGING = """\
# Staging: what Argo CD syncs into the staging namespace.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base   # the shared base
images:
  # the storefront
  - name: 127.0.0.1:5000/shop/web
    newTag: "1.4.0"   # set by hand before Dockyard

  # the API, served from the mirror
  - name: 127.0.0.1:5000/shop/api
    newName: 127.0.0.1:5000/mirror/api
    digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
namespace: staging
"""


# -- the edit -----------------------------------------------------------------------------

def test_setting_a_digest_keeps_comments_key_order_quoting_and_indentation() -> None:
    edited = set_digests(STAGING, [ImagePin(API, NEW)])
    assert edited == STAGING.replace(OLD, NEW)


def test_a_digest_takes_the_place_of_the_tag_and_new_name_stays() -> None:
    edited = set_digests(STAGING, [ImagePin(WEB, NEW), ImagePin(API, NEW)])
    assert edited == STAGING.replace(
        '    newTag: "1.4.0"   # set by hand before Dockyard\n', f"    digest: {NEW}\n",
    ).replace(OLD, NEW)


def test_a_tag_beside_the_right_digest_is_still_removed() -> None:
    text = f"images:\n- name: web\n  newTag: v1\n  digest: {NEW}\n# end\n"
    assert set_digests(text, [ImagePin("web", NEW)]) == \
        f"images:\n- name: web\n  digest: {NEW}\n# end\n"


def test_text_with_every_digest_in_place_comes_back_byte_for_byte() -> None:
    # Spacing ruamel would normalise on output proves the text was not re-emitted.
    text = f"kind:   Kustomization\nimages:\n- {{name: web,   digest: {NEW}}}\n"
    assert set_digests(text, [ImagePin("web", NEW)]) is text
    assert set_digests(STAGING, [ImagePin(API, OLD)]) is STAGING
    assert set_digests(STAGING, []) is STAGING
    edited = set_digests(STAGING, [ImagePin(WEB, NEW)])
    assert set_digests(edited, [ImagePin(WEB, NEW)]) is edited


def test_an_image_not_listed_is_appended_before_the_comment_that_introduces_the_next_key(
) -> None:
    text = "images:\n- name: web\n  newTag: v1  # pinned\n\n# the namespace\nnamespace: x\n"
    assert set_digests(text, [ImagePin("shop/api", NEW)]) == (
        f"images:\n- name: web\n  newTag: v1  # pinned\n- name: shop/api\n  digest: {NEW}\n"
        "\n# the namespace\nnamespace: x\n")


def test_images_is_created_when_the_kustomization_has_none() -> None:
    text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- a\n"
    assert set_digests(text, [ImagePin(WEB, NEW)]) == \
        f"{text}images:\n- name: {WEB}\n  digest: {NEW}\n"
    assert set_digests("images:\n", [ImagePin("web", NEW)]) == \
        f"images:\n- name: web\n  digest: {NEW}\n"


@pytest.mark.parametrize("style", [
    "images:\n- name: web\n  newTag: v1\n",
    "images:\n  - name: web\n    newTag: v1\n",
    "images:\n    -   name: web\n        newTag: v1\n",
], ids=["compact", "indented", "wide"])
def test_the_files_indentation_style_is_kept(style: str) -> None:
    assert set_digests(style, [ImagePin("web", NEW)]) == \
        style.replace("newTag: v1", f"digest: {NEW}")


def test_comments_before_the_document_start_and_windows_line_ends_are_kept() -> None:
    text = "# overlay\r\n---\r\nimages:\r\n- name: web\r\n  newTag: v1\r\n"
    assert set_digests(text, [ImagePin("web", NEW)]) == \
        f"# overlay\r\n---\r\nimages:\r\n- name: web\r\n  digest: {NEW}\r\n"


@pytest.mark.parametrize(("text", "complaint"), [
    ("", "the document is empty, not a Kustomization"),
    ("- a\n- b\n", "the document is a CommentedSeq, not a Kustomization"),
    ("kind: Component\n", "kind: 'Component', expected Kustomization"),
    ("apiVersion: v1\nkind: Kustomization\n", "apiVersion: 'v1', expected kustomize"),
    ("images: web\n", "images: must be a list"),
    ("images:\n- web\n", "images[0]: must be a mapping"),
    ("images:\n- newTag: v1\n", "images[0].name: must be a string"),
    ("images:\n- name: web\n- name: web\n", "images[1].name: web is listed twice"),
    ("images: [\n", "not a single YAML document"),
    ("a: 1\n---\nb: 2\n", "not a single YAML document: but found another document (line 2)"),
    ("a: 1\na: 2\n", "not a single YAML document"),
])
def test_a_document_that_is_not_a_kustomization_is_refused_naming_the_field(
        text: str, complaint: str) -> None:
    with pytest.raises(KustomizationError, match=r"^overlays/x/kustomization\.yaml: ") as e:
        set_digests(text, [ImagePin("web", NEW)], source="overlays/x/kustomization.yaml")
    assert complaint in str(e.value)
    assert not e.value.temporary


@pytest.mark.parametrize(("name", "digest"), [
    ("web", "sha256:abc"), ("web", "sha256:" + "A" * 64), ("web", "md5:" + "a" * 32),
    ("web", "b" * 64), ("", NEW), ("web app", NEW), (f"web@{OLD}", NEW),
])
def test_a_malformed_pin_is_refused(name: str, digest: str) -> None:
    with pytest.raises(InvalidArgumentError):
        ImagePin(name, digest)


def test_two_digests_for_one_image_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="pinned twice"):
        set_digests(STAGING, [ImagePin(WEB, NEW), ImagePin(WEB, OTHER)])


# -- the commit message -------------------------------------------------------------------

def test_the_commit_message_names_stage_images_digests_and_promotion(tmp_path: Path) -> None:
    one = commit_message("staging", [ImagePin(WEB, NEW)], "shop/web-1-4")
    assert one.splitlines()[0] == "staging: promote web@sha256:bbbbbbbbbbbb"
    message = commit_message("staging", [ImagePin(WEB, NEW), ImagePin(API, OTHER)], "shop/p2")
    subject, blank, *body = message.splitlines()
    assert (subject, blank) == ("staging: promote web, api", "")
    assert f"- {WEB}@{NEW}" in body
    assert f"- {API}@{OTHER}" in body
    trailers = Repos(tmp_path).git(tmp_path, "interpret-trailers", "--parse", stdin=message)
    assert trailers == "Stage: staging\nPromotion: shop/p2\n"


def test_the_commit_subject_stays_under_72_characters() -> None:
    many = [ImagePin(f"registry.local/team/service-number-{i}", NEW) for i in range(12)]
    long_stage = "s" * 63
    for stage, pins in (("prod", many), (long_stage, many), (long_stage, many[:1])):
        subject = commit_message(stage, pins, "ns/name").splitlines()[0]
        assert len(subject) < 72
    assert commit_message("prod", many, "ns/n").startswith("prod: promote 12 images\n")


@pytest.mark.parametrize("promotion", ["name", "ns/", "/name", "a/b/c", "ns/na me"])
def test_a_commit_message_needs_a_namespaced_promotion(promotion: str) -> None:
    with pytest.raises(InvalidArgumentError, match="namespace/name"):
        commit_message("prod", [ImagePin(WEB, NEW)], promotion)


# -- write-back against real git --------------------------------------------------------

@dataclass(frozen=True)
class Repos:
    """Bare repositories and work clones under one tmp directory, with git isolated."""

    root: Path

    def git(self, cwd: Path, *args: str, stdin: str = "") -> str:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        env.update(HOME=str(self.root / "home"), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
                   GIT_AUTHOR_NAME="Someone", GIT_AUTHOR_EMAIL="someone@example.org",
                   GIT_COMMITTER_NAME="Someone", GIT_COMMITTER_EMAIL="someone@example.org")
        (self.root / "home").mkdir(exist_ok=True)
        done = subprocess.run(["git", *args], cwd=cwd, env=env, input=stdin, text=True,
                              capture_output=True, check=True, timeout=60)
        return done.stdout

    def clone(self, remote: Path, name: str) -> Path:
        self.git(self.root, "clone", "--quiet", "--branch", "main", str(remote), name)
        return self.root / name

    def commit(self, clone: Path, files: dict[str, str], message: str) -> None:
        for name, content in files.items():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_text(content)
        self.git(clone, "add", "--all")
        self.git(clone, "commit", "--quiet", "-m", message)

    def show(self, remote: Path, what: str) -> str:
        return self.git(remote, "show", what)

    def log(self, remote: Path, fmt: str = "%s") -> list[str]:
        return self.git(remote, "log", f"--format={fmt}", "main").splitlines()


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return Repos(tmp_path)


@pytest.fixture
def remote(repos: Repos) -> Path:
    """A bare repository whose main branch has a staging and a prod overlay."""
    bare = repos.root / "deploy.git"
    repos.git(repos.root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = repos.root / "seed"
    repos.git(repos.root, "init", "--quiet", "--initial-branch=main", str(seed))
    repos.commit(seed, {"README.md": "The deployment.\n",
                        "overlays/staging/kustomization.yaml": STAGING,
                        "overlays/prod/kustomization.yaml": "images: []\n"}, "Initial layout")
    (seed / "outside").mkdir()
    (seed / "overlays/escape").symlink_to("../outside")
    (seed / "overlays/linked").mkdir()
    (seed / "overlays/linked/kustomization.yaml").symlink_to("../prod/kustomization.yaml")
    repos.commit(seed, {}, "Links")
    repos.git(seed, "push", "--quiet", str(bare), "main")
    return bare


def _write_back(remote: Path, workdir: Path, pins: Sequence[ImagePin], *,
                path: str = "overlays/staging", attempts: int = 3,
                repository: str | None = None) -> WriteBackResult:
    return write_back(repository=repository or str(remote), branch="main", path=path,
                      pins=pins, message=commit_message("staging", pins, "shop/promo-1"),
                      author=BOT, workdir=workdir, attempts=attempts, timeout=30)


def test_a_write_back_pushes_exactly_one_commit_with_the_file_author_and_message(
        repos: Repos, remote: Path, tmp_path: Path) -> None:
    before = repos.log(remote, "%H")
    pins = [ImagePin(WEB, NEW)]
    result = _write_back(remote, tmp_path / "work", pins)
    assert result.changed
    assert result.attempts == 1
    assert repos.log(remote, "%H") == [result.commit, *before]
    assert repos.log(remote, "%P")[0] == before[0]
    assert repos.show(remote, "main:overlays/staging/kustomization.yaml") == \
        set_digests(STAGING, pins)
    assert repos.log(remote, "%an <%ae>|%cn <%ce>")[0] == \
        "Dockyard <dockyard@example.org>|Dockyard <dockyard@example.org>"
    assert repos.git(remote, "log", "-1", "--format=%B", "main") == \
        commit_message("staging", pins, "shop/promo-1") + "\n"
    changed = repos.git(remote, "diff", "--name-only", f"{before[0]}..main").split()
    assert changed == ["overlays/staging/kustomization.yaml"]


def test_a_second_write_back_of_the_same_digests_makes_no_commit(
        repos: Repos, remote: Path, tmp_path: Path) -> None:
    first = _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)])
    again = _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)])
    assert again == WriteBackResult(commit=None, changed=False, attempts=1)
    assert repos.log(remote, "%H")[0] == first.commit
    _the_clone(tmp_path / "work")  # one clone, reused


def test_the_machines_git_configuration_never_reaches_the_commit(
        repos: Repos, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "hostile-home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Wrong Person\n\temail = wrong@x\n"
                                     "[commit]\n\tgpgsign = true\n"
                                     "[core]\n\thooksPath = /nonexistent\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-a-repository"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Wrong Person")
    _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)])
    assert repos.log(remote, "%an|%cn|%G?")[0] == "Dockyard|Dockyard|N"


def _move_remote_on_fetch(repos: Repos, clone: Path, other: Path, times: int) -> None:
    """Make the remote move while our write-back is between its fetch and its push.

    A reference-transaction hook in the write-back's own clone runs when the fetch has
    updated the branch, and pushes from `other`; after a push it makes a new commit there,
    ready for the next time.
    """
    hook = clone / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    count = repos.root / "moves"
    hook.write_text(f"""#!{sys.executable}
import os, pathlib, subprocess, sys
sys.stdin.read()
count = pathlib.Path({str(count)!r})
moves = int(count.read_text()) if count.exists() else 0
if sys.argv[1] != "committed" or moves >= {times}:
    sys.exit(0)
count.write_text(str(moves + 1))
env = {{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}}
env.update(HOME={str(repos.root / "home")!r}, GIT_CONFIG_NOSYSTEM="1",
           GIT_AUTHOR_NAME="Other", GIT_AUTHOR_EMAIL="other@example.org",
           GIT_COMMITTER_NAME="Other", GIT_COMMITTER_EMAIL="other@example.org")
git = ["git", "-C", {str(other)!r}]
subprocess.run([*git, "push", "--quiet", "origin", "main"], env=env, check=True)
subprocess.run([*git, "commit", "--quiet", "--allow-empty", "-m", "Move again"], env=env,
               check=True)
""")
    hook.chmod(0o755)


def _the_clone(workdir: Path) -> Path:
    clones = list(workdir.glob("*.git"))
    assert len(clones) == 1
    return clones[0]


def test_a_remote_that_moved_is_followed_and_every_change_is_kept(
        repos: Repos, remote: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    assert not _write_back(remote, workdir, [ImagePin(API, OLD)]).changed  # makes the clone
    other = repos.clone(remote, "other")
    repos.commit(other, {"README.md": "The deployment, documented.\n"}, "Docs")
    repos.git(other, "push", "--quiet", "origin", "main")
    # Pushed only once the write-back has fetched: our first push is then refused.
    theirs = STAGING.replace(OLD, OTHER)
    repos.commit(other, {"overlays/staging/kustomization.yaml": theirs}, "API by hand")
    _move_remote_on_fetch(repos, _the_clone(workdir), other, times=1)

    result = _write_back(remote, workdir, [ImagePin(WEB, NEW)])

    assert result.changed
    assert result.attempts == 2
    assert repos.log(remote) == [
        "staging: promote web@sha256:bbbbbbbbbbbb", "API by hand", "Docs", "Links",
        "Initial layout"]
    assert repos.log(remote, "%H")[0] == result.commit
    assert repos.show(remote, "main:overlays/staging/kustomization.yaml") == \
        set_digests(theirs, [ImagePin(WEB, NEW)])
    assert repos.show(remote, "main:README.md") == "The deployment, documented.\n"


def test_a_branch_that_moves_on_every_attempt_is_reported_after_the_last(
        repos: Repos, remote: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    _write_back(remote, workdir, [ImagePin(API, OLD)])
    other = repos.clone(remote, "other")
    repos.commit(other, {"README.md": "Busy.\n"}, "Busy")
    repos.git(other, "push", "--quiet", "origin", "main")  # the first fetch sees a move
    repos.commit(other, {"README.md": "Busier.\n"}, "Busier")
    _move_remote_on_fetch(repos, _the_clone(workdir), other, times=100)

    with pytest.raises(ContentionError, match="moved between fetch and push 2 times") as e:
        _write_back(remote, workdir, [ImagePin(WEB, NEW)], attempts=2)

    assert e.value.temporary
    assert "Dockyard" not in repos.log(remote, "%an")


def test_concurrent_write_backs_to_one_repository_both_land(
        repos: Repos, remote: Path, tmp_path: Path) -> None:
    jobs = [("overlays/staging", ImagePin(WEB, NEW)), ("overlays/prod", ImagePin(WEB, OTHER))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(
            lambda job: _write_back(remote, tmp_path / "work", [job[1]], path=job[0]), jobs))
    assert all(result.changed for result in results)
    assert repos.show(remote, "main:overlays/prod/kustomization.yaml") == \
        f"images:\n- name: {WEB}\n  digest: {OTHER}\n"
    assert NEW in repos.show(remote, "main:overlays/staging/kustomization.yaml")


def test_an_unreachable_repository_raises_with_gits_reason(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="does not appear to be a git repository") as e:
        _write_back(tmp_path / "missing.git", tmp_path / "work", [ImagePin(WEB, NEW)])
    assert e.value.temporary
    url = "https://robot:s3cret@127.0.0.1:9/deploy.git"  # nothing listens on port 9
    with pytest.raises(GitError) as e:
        _write_back(tmp_path, tmp_path / "work", [ImagePin(WEB, NEW)], repository=url)
    assert "s3cret" not in str(e.value)


def test_a_push_the_server_refuses_is_reported_without_retrying(
        repos: Repos, remote: Path, tmp_path: Path) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho protected branch >&2\nexit 1\n")
    hook.chmod(0o755)
    before = repos.log(remote, "%H")
    with pytest.raises(GitError, match=r"\[remote rejected\] \(pre-receive hook declined\)"):
        _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)])
    assert repos.log(remote, "%H") == before


def test_a_missing_branch_or_overlay_is_reported(remote: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="couldn't find remote ref"):
        write_back(repository=str(remote), branch="release", path="overlays/staging",
                   pins=[ImagePin(WEB, NEW)], message="m", author=BOT, workdir=tmp_path)
    with pytest.raises(KustomizationError, match=r"overlays/qa/kustomization\.yaml: no such"):
        _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)], path="overlays/qa")


@pytest.mark.parametrize("path", [
    "../prod", "/etc", "overlays/../../elsewhere", ".git", "overlays/.git/x", "a\\..\\b",
])
def test_a_path_outside_the_repository_is_refused_before_any_git(
        remote: Path, tmp_path: Path, path: str) -> None:
    with pytest.raises(InvalidArgumentError, match="inside the repository"):
        _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)], path=path)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(("path", "complaint"), [
    ("overlays/escape", "no such file on the branch (symbolic links are not followed)"),
    ("overlays/linked", "not a regular file (git mode 120000)"),
])
def test_a_symbolic_link_in_the_repository_is_not_followed(
        repos: Repos, remote: Path, tmp_path: Path, path: str, complaint: str) -> None:
    before = repos.log(remote, "%H")
    with pytest.raises(KustomizationError) as e:
        _write_back(remote, tmp_path / "work", [ImagePin(WEB, NEW)], path=path)
    assert complaint in str(e.value)
    assert repos.log(remote, "%H") == before


@pytest.mark.parametrize("branch", ["-f", "a..b", "main~1", "has space", ""])
def test_a_malformed_branch_is_refused(remote: Path, tmp_path: Path, branch: str) -> None:
    with pytest.raises(InvalidArgumentError, match="not a valid branch name"):
        write_back(repository=str(remote), branch=branch, path="overlays/staging",
                   pins=[ImagePin(WEB, NEW)], message="m", author=BOT, workdir=tmp_path)


def test_an_author_git_would_rewrite_is_refused() -> None:
    for name, email in (("", "a@b"), ("A <a@b>", "a@b"), ("A", "a@b>\n"), ("A\nB", "a@b")):
        with pytest.raises(InvalidArgumentError):
            Author(name, email)
