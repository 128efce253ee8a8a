"""`dockyard validate`: check manifests against the models and the CRD schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from dockyard_api import API_VERSION, BY_KIND, InvalidManifestError, Problem, load_documents, parse
from dockyard_api.crd import kind_schema
from dockyard_api.server_validation import validate
from dockyard_cli.summaries import summary

_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Verdict:
    """The outcome for one document of one file."""

    source: str
    kind: str = ""
    name: str = ""
    summary: str = ""
    problems: list[Problem] = field(default_factory=list)


def manifest_files(paths: tuple[Path, ...]) -> Iterator[Path]:
    """The files named, and the YAML/JSON files under the directories named, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        else:
            yield path


def check_document(document: object, source: str) -> Verdict | None:
    """Model and schema verdicts for one document; None when it is not a Dockyard object."""
    if isinstance(document, dict) and document.get("apiVersion") != API_VERSION:
        return None
    verdict = Verdict(source)
    if isinstance(document, dict):
        verdict.kind = str(document.get("kind", ""))
        meta = document.get("metadata")
        verdict.name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
    try:
        resource = parse(document, source=source)
        verdict.summary = summary(resource)
    except InvalidManifestError as e:
        verdict.problems += [Problem(p.path, f"{p.message} (model)") for p in e.problems]
    if isinstance(document, dict) and verdict.kind in BY_KIND:
        _, found = validate(document, kind_schema(verdict.kind))
        verdict.problems += [Problem(p.path, f"{p.message} (CRD schema)") for p in found]
    return verdict


def _verdicts(paths: tuple[Path, ...]) -> Iterator[Verdict]:
    for path in manifest_files(paths):
        try:
            documents = list(load_documents(path.read_text(encoding="utf-8"), source=str(path)))
        except InvalidManifestError as e:
            yield Verdict(str(path), problems=e.problems)
            continue
        for index, document in enumerate(documents):
            source = f"{path}#{index}" if len(documents) > 1 else str(path)
            verdict = check_document(document, source)
            if verdict is not None:
                yield verdict


@click.command("validate")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
def command(paths: tuple[Path, ...], fmt: str) -> None:
    """Check Dockyard manifests in PATHS (files or directories) before you apply them.

    Each object is checked twice: by the API models (what Dockyard itself accepts) and by the
    generated CRD's OpenAPI schema and CEL rules (what the Kubernetes API server accepts).
    Objects of other API groups are skipped. Exits 1 when any object is invalid.

    \b
    Example:
      dockyard validate examples/ my-app.yaml
    """
    verdicts = list(_verdicts(paths))
    bad = [v for v in verdicts if v.problems]
    if fmt == "json":
        click.echo(json.dumps([_as_json(v) for v in verdicts], indent=2))
    else:
        for v in verdicts:
            label = f"{v.kind or '?'}/{v.name or '?'}"
            if v.problems:
                click.echo(f"INVALID {label:<34} {v.source}")
                for problem in v.problems:
                    click.echo(f"        {problem}")
            else:
                click.echo(f"ok      {label:<34} {v.summary}")
        click.echo(f"{len(verdicts) - len(bad)} valid, {len(bad)} invalid")
    if bad:
        raise SystemExit(1)


def _as_json(verdict: Verdict) -> dict[str, Any]:
    return {"source": verdict.source, "kind": verdict.kind, "name": verdict.name,
            "valid": not verdict.problems, "summary": verdict.summary,
            "problems": [{"path": p.path, "message": p.message} for p in verdict.problems]}
