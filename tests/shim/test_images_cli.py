"""`dockyard load | import | images | rmi | tag` against a store in a temporary DOCKYARD_ROOT."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from dockyard_cli.images import commands
from dockyard_shim.images import ImageStore
from dockyard_shim.snapshots import OverlaySnapshotter
from tests.shim import imagefactory as f

# The lead registers `commands` on the real group; a stand-in group tests them meanwhile.
cli = click.Group("dockyard", commands=commands)

BASE = {"etc/hostname": "box\n"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def run(root: Path) -> CliRunner:
    return CliRunner(env={"DOCKYARD_ROOT": str(root)})


def invoke(run: CliRunner, *args: str, stdin: bytes | None = None) -> Result:
    return run.invoke(cli, list(args), input=stdin, catch_exceptions=False)


@pytest.mark.parametrize("command", ["load", "import", "images", "rmi", "tag"])
def test_every_command_explains_itself_with_examples(run: CliRunner, command: str) -> None:
    result = invoke(run, command, "--help")
    assert result.exit_code == 0
    assert f"Usage: dockyard {command}" in result.output
    assert "Examples:" in result.output


def test_load_prints_the_loaded_names_like_docker(run: CliRunner, tmp_path: Path) -> None:
    img = f.image([BASE])
    archive = f.oci_archive(tmp_path / "oci.tar", [(img, ["busybox:1.36"])])
    result = invoke(run, "load", "--no-unpack", "-i", str(archive))
    assert result.exit_code == 0, result.output
    assert result.output == "Loaded image: busybox:1.36\n"


def test_load_reads_standard_input_and_reports_unnamed_images_by_id(run: CliRunner,
                                                                    tmp_path: Path) -> None:
    img = f.image([BASE])
    archive = f.oci_archive(tmp_path / "oci.tar", [(img, [])])
    result = invoke(run, "load", "--no-unpack", stdin=archive.read_bytes())
    assert result.exit_code == 0, result.output
    assert result.output == f"Loaded image ID: {img.id}\n"


def test_images_lists_each_name_as_a_table_as_ids_or_as_json(run: CliRunner,
                                                             tmp_path: Path) -> None:
    img = f.image([BASE])
    invoke(run, "load", "--no-unpack", "-i",
           str(f.oci_archive(tmp_path / "oci.tar", [(img, ["ghcr.io/me/app:v1"])])))
    assert invoke(run, "tag", "ghcr.io/me/app:v1", "app").exit_code == 0
    table = invoke(run, "images").output.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    short = img.id.removeprefix("sha256:")[:12]
    assert [line.split()[:3] for line in table[1:]] == [["app", "latest", short],
                                                       ["ghcr.io/me/app", "v1", short]]
    assert "ago" in table[1]
    assert invoke(run, "images", "-q").output == f"{short}\n"
    [listed] = json.loads(invoke(run, "images", "--format", "json").output)
    assert listed["id"] == img.id
    assert listed["repoTags"] == ["app:latest", "ghcr.io/me/app:v1"]


def test_rmi_untags_deletes_and_goes_on_after_an_error(run: CliRunner, tmp_path: Path) -> None:
    img = f.image([BASE])
    invoke(run, "load", "--no-unpack", "-i",
           str(f.oci_archive(tmp_path / "oci.tar", [(img, ["one"])])))
    invoke(run, "tag", "one", "two")
    result = invoke(run, "rmi", "one", "missing", "two")
    assert result.exit_code == 1
    assert result.stdout == f"Untagged: one:latest\nUntagged: two:latest\nDeleted: {img.id}\n"
    assert result.stderr == ("Error: no such image: missing "
                             "(docker.io/library/missing:latest)\n")
    assert invoke(run, "images", "-q").output == ""


def test_rmi_by_id_of_an_image_with_several_names_needs_force(run: CliRunner,
                                                              tmp_path: Path) -> None:
    img = f.image([BASE])
    invoke(run, "load", "--no-unpack", "-i",
           str(f.oci_archive(tmp_path / "oci.tar", [(img, ["one"])])))
    invoke(run, "tag", "one", "two")
    short = img.id.removeprefix("sha256:")[:12]
    refused = invoke(run, "rmi", short)
    assert refused.exit_code == 1
    assert "2 names" in refused.stderr
    assert invoke(run, "rmi", "-f", short).exit_code == 0


@pytest.mark.parametrize(("args", "message"), [
    (("tag", "nothing", "x"), "Error: no such image: nothing"),
    (("tag", "x", "Bad:Name"), "Error: invalid"),
    (("load", "--no-unpack", "-i", "/nonexistent.tar"), "Error: image archive /nonexistent"),
])
def test_errors_are_one_line_on_stderr_and_exit_1(run: CliRunner, args: tuple[str, ...],
                                                  message: str) -> None:
    result = invoke(run, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.root
def test_import_then_load_unpack_and_rmi_cleans_everything(run: CliRunner, root: Path,
                                                           tmp_path: Path) -> None:
    rootfs = f.rootfs_tar(tmp_path / "rootfs.tar.gz", f.busybox_files(), compress=True)
    imported = invoke(run, "import", str(rootfs), "mybase:1.0")
    assert imported.exit_code == 0, imported.output
    image_id = imported.output.strip()
    assert image_id.startswith("sha256:")
    img = f.image([BASE, {"app": "x"}])
    loaded = invoke(run, "load", "-i", str(f.oci_archive(tmp_path / "oci.tar", [(img, ["app"])])))
    assert loaded.exit_code == 0, loaded.output
    with OverlaySnapshotter(root / "overlay") as sn, ImageStore(root / "images", sn) as store:
        assert len(list(sn.walk())) == 3  # unpacked at load and import: 1 + 2 layers
        assert store.get("mybase:1.0").id == image_id
    assert invoke(run, "rmi", "mybase:1.0", "app").exit_code == 0
    with OverlaySnapshotter(root / "overlay") as sn, ImageStore(root / "images", sn) as store:
        assert list(sn.walk()) == []
        assert list(store.content.list()) == []
