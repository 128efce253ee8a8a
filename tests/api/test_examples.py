"""Every example is valid for the models and for the CRD schema, and every kind has one."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_api import BY_KIND, KINDS, dump, load_documents, parse
from dockyard_api.crd import kind_schema
from dockyard_api.server_validation import validate

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def _documents() -> list[tuple[str, dict[str, object]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for index, document in enumerate(load_documents(path.read_text(encoding="utf-8"))):
            assert isinstance(document, dict)
            found.append((f"{path.name}#{index}", document))
    return found


DOCUMENTS = _documents()


@pytest.mark.parametrize(("source", "document"), DOCUMENTS, ids=[s for s, _ in DOCUMENTS])
def test_the_example_is_valid_for_the_models(source: str, document: dict[str, object]) -> None:
    parse(document, source=source)


@pytest.mark.parametrize(("source", "document"), DOCUMENTS, ids=[s for s, _ in DOCUMENTS])
def test_the_example_is_valid_for_its_crd(source: str, document: dict[str, object]) -> None:
    _, problems = validate(document, kind_schema(str(document["kind"])))
    assert problems == []


@pytest.mark.parametrize(("source", "document"), DOCUMENTS, ids=[s for s, _ in DOCUMENTS])
def test_what_the_models_write_back_the_api_server_accepts(
        source: str, document: dict[str, object]) -> None:
    written = dump(parse(document, source=source))
    _, problems = validate(written, kind_schema(str(document["kind"])))
    assert problems == []


def test_every_kind_has_an_example() -> None:
    assert {str(d["kind"]) for _, d in DOCUMENTS} == {cls.kind_info.kind for cls in KINDS}


def test_the_four_stages_form_one_path_from_dev_to_prod() -> None:
    upstream = {d["metadata"]["name"]: d["spec"].get("upstream")  # type: ignore[index,union-attr]
                for _, d in DOCUMENTS if d["kind"] == "Stage"}
    assert upstream == {"dev": None, "ci": "dev", "staging": "ci", "prod": "staging"}


def test_schema_defaults_match_model_defaults() -> None:
    """What the API server fills in is what the models assume when a field is absent."""
    for _, document in DOCUMENTS:
        cls = BY_KIND[str(document["kind"])]
        defaulted, _ = validate(document, kind_schema(cls.kind_info.kind))
        assert parse(defaulted) == parse(document)
