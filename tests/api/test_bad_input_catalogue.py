"""Every manifest in tests/catalogue/invalid is refused, with a message naming its field.

Each file says in its header which field is wrong (`# expect: spec.resources.memory`) and,
where the CRD schema cannot express the rule, why only the models catch it
(`# model-only: …`). Both layers are tested: the models, and the generated CRD schema as
the API server applies it (defaults, strict fields, OpenAPI, list semantics, CEL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard_api import BY_KIND, InvalidManifestError, Problem, load_documents, parse
from dockyard_api.crd import kind_schema
from dockyard_api.server_validation import validate

CATALOGUE = Path(__file__).resolve().parent.parent / "catalogue" / "invalid"


@dataclass(frozen=True)
class Case:
    path: Path
    expect: str
    model_only: str

    @property
    def manifest(self) -> object:
        (document,) = load_documents(self.path.read_text(encoding="utf-8"))
        return document


def _cases() -> list[Case]:
    cases = []
    for path in sorted(CATALOGUE.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        expect = re.search(r"^# expect: (\S+)$", text, re.MULTILINE)
        model_only = re.search(r"^# model-only: (.+)$", text, re.MULTILINE)
        assert expect is not None, f"{path.name} has no '# expect:' header"
        cases.append(Case(path, expect.group(1), model_only.group(1) if model_only else ""))
    return cases


CASES = _cases()


def _names_field(problems: list[Problem], expect: str) -> bool:
    """A problem is reported on the expected field or on a field beneath it."""
    return any(p.path == expect or p.path.startswith((expect + ".", expect + "["))
               for p in problems)


def test_the_catalogue_holds_at_least_25_invalid_manifests() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path.stem)
def test_the_models_refuse_it_naming_the_field(case: Case) -> None:
    with pytest.raises(InvalidManifestError) as caught:
        parse(case.manifest, source=case.path.name)
    problems = caught.value.problems
    assert _names_field(problems, case.expect), [str(p) for p in problems]
    for problem in problems:
        assert problem.message.strip(), "every problem says what is wrong"
    assert case.expect in str(caught.value)


@pytest.mark.parametrize("case", [c for c in CASES if not c.model_only],
                         ids=lambda c: c.path.stem)
def test_the_crd_schema_refuses_it_naming_the_field(case: Case) -> None:
    manifest = case.manifest
    assert isinstance(manifest, dict)
    _, problems = validate(manifest, kind_schema(manifest["kind"]))
    assert _names_field(problems, case.expect), [str(p) for p in problems]


@pytest.mark.parametrize("case", [c for c in CASES if c.model_only],
                         ids=lambda c: c.path.stem)
def test_model_only_entries_are_really_beyond_the_schema(case: Case) -> None:
    """A `model-only` label is a claim: the schema must indeed let these through."""
    manifest = case.manifest
    assert isinstance(manifest, dict)
    cls = BY_KIND.get(manifest["kind"], BY_KIND["Container"])
    _, problems = validate(manifest, kind_schema(cls.kind_info.kind))
    assert not _names_field(problems, case.expect), (
        f"the schema catches this too: drop the model-only header of {case.path.name}")
