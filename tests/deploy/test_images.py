"""The Dockerfiles in images/ build from files that exist and install what each image runs.

No image is built here (no container builds on the build machines); these checks catch
the mistakes that would break a build or a pod: a moved folder, a missing tool.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import ROOT

DOCKERFILES = ["images/operator.Dockerfile", "images/shim.Dockerfile"]


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text(encoding="utf-8"))
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def packages(path: str) -> set[str]:
    """The Debian packages the final stage installs."""
    final = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(final) if word == "FROM")
    installed: set[str] = set()
    for word, rest in final[last_from:]:
        if word == "RUN" and "apt-get install" in rest:
            tail = rest.split("apt-get install", 1)[1].split("&&", 1)[0]
            installed |= {w for w in tail.split() if not w.startswith("-")}
    return installed


@pytest.mark.parametrize("path", DOCKERFILES)
def test_every_file_a_dockerfile_copies_exists(path: str) -> None:
    copies = [rest.split() for word, rest in instructions(path)
              if word == "COPY" and "--from" not in rest]
    assert copies
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"{path}: COPY {source}: no such file"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_an_image_carries_every_component_root_the_distribution_packages(path: str) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    roots = re.search(r'where = \[([^\]]*)\]', pyproject)
    assert roots is not None
    copied = {rest.split()[0] for word, rest in instructions(path) if word == "COPY"}
    for root in re.findall(r'"([^"]+)"', roots.group(1)):
        assert any(c == root or c.startswith(root + "/") for c in copied), root


@pytest.mark.parametrize("path", DOCKERFILES)
def test_images_are_debian_with_python_3_11(path: str) -> None:
    assert all("debian:${DEBIAN}" in rest for word, rest in instructions(path)
               if word == "FROM")
    assert ("ARG", "DEBIAN=bookworm-slim") in instructions(path)  # Debian 12: Python 3.11
    assert "python3" in packages(path)


def test_the_operator_image_has_skopeo_and_git() -> None:
    assert {"skopeo", "git", "openssh-client", "ca-certificates"} <= \
        packages("images/operator.Dockerfile")


def test_the_operator_image_runs_as_the_user_the_chart_expects() -> None:
    users = [rest for word, rest in instructions("images/operator.Dockerfile")
             if word == "USER"]
    chart = (ROOT / "charts/dockyard/templates/operator-deployment.yaml").read_text()
    assert users == ["10001:10001"]
    assert "runAsUser: 10001" in chart


def test_the_shim_image_has_what_the_runtime_calls() -> None:
    assert {"skopeo", "iproute2", "ca-certificates"} <= packages("images/shim.Dockerfile")


def test_the_chart_runs_the_commands_the_images_install() -> None:
    values = yaml.safe_load((ROOT / "charts/dockyard/values.yaml").read_text())
    assert values["operator"]["image"]["repository"] == "dockyard/operator"
    assert values["shim"]["image"]["repository"] == "dockyard/shim"
    scripts = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dockyard = "dockyard_cli.main:main"' in scripts  # what the DaemonSet runs
