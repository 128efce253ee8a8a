"""The `dockyard` command: help for newcomers, version, CRD generation, validate, explain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dockyard_api import KINDS
from dockyard_cli.commands import cli

CATALOGUE = Path(__file__).resolve().parent.parent / "catalogue" / "invalid"


@pytest.fixture
def run() -> CliRunner:
    return CliRunner()


def test_the_console_script_is_installed_and_helps() -> None:
    script = Path(sys.executable).parent / "dockyard"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0
    for command in ("crd", "validate", "explain", "version"):
        assert command in result.stdout


@pytest.mark.parametrize("args", [["crd", "--help"], ["crd", "generate", "--help"],
                                  ["crd", "print", "--help"], ["validate", "--help"],
                                  ["explain", "--help"], ["version", "--help"]])
def test_every_command_has_help_with_a_description(run: CliRunner, args: list[str]) -> None:
    result = run.invoke(cli, args)
    assert result.exit_code == 0
    assert "Usage: dockyard" in result.output
    assert len(result.output.splitlines()) > 4


def test_version_as_json(run: CliRunner) -> None:
    result = run.invoke(cli, ["version", "--format", "json"])
    assert json.loads(result.output)["apiVersion"] == "dockyard.dev/v1alpha1"


def test_generate_writes_then_is_up_to_date(run: CliRunner, tmp_path: Path) -> None:
    first = run.invoke(cli, ["--log-format", "json", "crd", "generate", "--root",
                             str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "15 file(s) written" in first.output
    assert len(list((tmp_path / "crds").glob("dockyard.dev_*.yaml"))) == len(KINDS)
    second = run.invoke(cli, ["crd", "generate", "--root", str(tmp_path)])
    assert "0 file(s) written" in second.output
    assert run.invoke(cli, ["crd", "generate", "--check", "--root", str(tmp_path)]).exit_code == 0


def test_check_fails_and_names_the_stale_files(run: CliRunner, tmp_path: Path) -> None:
    result = run.invoke(cli, ["crd", "generate", "--check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "stale: crds/dockyard.dev_containers.yaml" in result.output
    assert "run `dockyard crd generate`" in result.output


def test_print_emits_the_named_crd(run: CliRunner) -> None:
    result = run.invoke(cli, ["crd", "print", "volume"])
    (document,) = [d for d in yaml.safe_load_all(result.output) if d]
    assert document["metadata"]["name"] == "volumes.dockyard.dev"
    assert run.invoke(cli, ["crd", "print", "pod"]).exit_code == 2


def test_validate_accepts_the_examples(run: CliRunner, repo_root: Path) -> None:
    result = run.invoke(cli, ["validate", str(repo_root / "examples")])
    assert result.exit_code == 0, result.output
    assert "0 invalid" in result.output
    assert "ok      Container/web" in result.output


def test_validate_refuses_a_bad_manifest_naming_the_field(run: CliRunner) -> None:
    result = run.invoke(cli, ["validate", str(CATALOGUE / "container-port-zero.yaml")])
    assert result.exit_code == 1
    assert "spec.network.ports[0].containerPort" in result.output
    assert "(model)" in result.output
    assert "(CRD schema)" in result.output


def test_validate_reports_json(run: CliRunner) -> None:
    result = run.invoke(cli, ["validate", "--format", "json",
                              str(CATALOGUE / "volume-two-sources.yaml")])
    (verdict,) = json.loads(result.output)
    assert verdict["valid"] is False
    assert {p["path"] for p in verdict["problems"]} == {"spec.local"}


def test_validate_reports_broken_yaml(run: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: [unclosed\n")
    result = run.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert "not valid YAML" in result.output


def test_validate_skips_other_api_groups(run: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n")
    result = run.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0
    assert "0 valid, 0 invalid" in result.output


def test_explain_shows_a_fields_documentation(run: CliRunner) -> None:
    result = run.invoke(cli, ["explain", "ctr.spec.resources"])
    assert result.exit_code == 0
    assert "FIELD:    spec.resources <object>" in result.output
    assert "memory\t<int-or-string>" in result.output


def test_explain_walks_through_lists(run: CliRunner) -> None:
    result = run.invoke(cli, ["explain", "container.spec.volumeMounts.mountPath"])
    assert result.exit_code == 0
    assert "<string>" in result.output


def test_explain_names_the_fields_it_has_when_one_is_wrong(run: CliRunner) -> None:
    result = run.invoke(cli, ["explain", "container.spec.memory"])
    assert result.exit_code == 2
    assert "container.spec has no field 'memory'" in result.output
    assert "resources" in result.output
