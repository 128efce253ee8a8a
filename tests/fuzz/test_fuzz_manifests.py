"""Properties of manifest parsing (`dockyard_api.manifests`) over generated objects and YAML.

- every example manifest in examples/ parses, and its dump parses to the same model;
- any object (an example mutated: keys deleted, values of the wrong type, huge numbers,
  deep nests, non-string keys, bytes, sets) is a model or an InvalidManifestError naming
  its problems, never another exception;
- any YAML text (a dumped mutant, spliced with complex keys, anchors and aliases, explicit
  tags, deep nests, or damaged) reads as documents or fails with InvalidManifestError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from dockyard_api.manifests import InvalidManifestError, dump, load_documents, parse
from tests.fuzz.documents import json_values, mutated

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS: list[Any] = [document for path in sorted(EXAMPLES.rglob("*.yaml"))
                    for document in load_documents(path.read_text(), source=str(path))]

yaml_only_values = st.one_of(
    st.binary(max_size=8), st.frozensets(st.integers(), max_size=2),
    st.dictionaries(st.integers() | st.none() | st.floats() | st.booleans(), json_values,
                    max_size=2),
)
objects = mutated(st.sampled_from(SEEDS)) | st.sampled_from(SEEDS).map(
    lambda seed: {**seed, "spec": {"x": None}}) | json_values
SNIPPETS = (
    "? [a, b]\n: c\n", "? {a: 1}\n: c\n", "a: &x [1, *x]\n", "a: *nowhere\n",
    "a: !!python/object/apply:os.system ['true']\n", "a: !!binary AAAA\n",
    "a: !!set {x, y}\n", "a: !!timestamp 2001-12-14\n", "a: !!float nan\n",
    "a: !!bool maybe\n", "a: !!timestamp soon\n", "a: !!int 0xg\n", "a: !!omap [1]\n",
    "[" * 1000 + "]" * 1000 + "\n", "{a: " * 1000 + "1" + "}" * 1000 + "\n",
    "a: 1\na: 2\n", "--- \n...\n---\n", "\t- tab\n", "a: '\udcff'\n", "a: b: c\n",
    "1" * 5000 + "\n", "a: 0x" + "f" * 5000 + "\n",
)


def refused_cleanly(error: InvalidManifestError) -> None:
    assert error.problems, "an InvalidManifestError without problems"
    assert all(p.message for p in error.problems)


def parse_or_refuse(document: object) -> None:
    try:
        resource = parse(document, source="fuzz")
    except InvalidManifestError as e:
        refused_cleanly(e)
    else:
        assert parse(dump(resource)) == resource


@given(st.sampled_from(SEEDS))
def test_every_example_parses_and_its_dump_parses_to_the_same_model(seed: Any) -> None:
    resource = parse(seed)
    assert parse(dump(resource)) == resource


@given(objects | mutated(st.sampled_from(SEEDS)).map(lambda d: {"spec": d}) | yaml_only_values)
def test_any_object_is_a_model_or_an_invalid_manifest_error(document: Any) -> None:
    parse_or_refuse(document)


def deep(depth: int, leaf: Any) -> Any:
    nested = leaf
    for n in range(depth):
        nested = {"a": nested} if n % 2 else [nested]
    return nested


@given(st.integers(0, 5000), json_values)
@example(5000, {})
def test_a_deeply_nested_object_is_a_model_or_an_invalid_manifest_error(
        depth: int, leaf: Any) -> None:
    seed = SEEDS[0]
    parse_or_refuse({**seed, "spec": deep(depth, leaf)})
    parse_or_refuse(deep(depth, seed))


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    """Nine levels of nine aliases: 387 million values written in ten lines."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    seed = SEEDS[0]
    text = "\n".join([f"apiVersion: {seed['apiVersion']}", f"kind: {seed['kind']}",
                      "metadata: {name: x}", "spec:", *(f"  {line}" for line in lines)])
    [document] = load_documents(text)
    with pytest.raises(InvalidManifestError, match="aliases are expanded"):
        parse(document)


def test_a_mapping_that_contains_itself_is_refused() -> None:
    [document] = load_documents("&top {apiVersion: x, kind: Container, spec: *top}")
    with pytest.raises(InvalidManifestError, match="contains itself"):
        parse({**SEEDS[0], "spec": document})


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """A dumped mutant, maybe with a snippet spliced in at a line, maybe damaged."""
    lines = yaml.safe_dump(draw(objects), allow_unicode=True).splitlines(keepends=True)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = [draw(st.sampled_from(SNIPPETS))]
    text = "".join(lines)
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=4)) + text[at:]
    return text


@given(yaml_texts() | st.sampled_from(SNIPPETS) | st.text(max_size=40))
@example("? [a, b]\n: c\n")
@example("[" * 1000 + "]" * 1000 + "\n")
@example("1" * 5000 + "\n")
@example("a: !!timestamp 2001-12-14\n  - null\n")  # PyYAML raised AttributeError
@example("a: !!bool maybe\n")  # and KeyError
def test_any_yaml_text_reads_as_documents_or_an_invalid_manifest_error(text: str) -> None:
    try:
        documents = list(load_documents(text, source="fuzz.yaml"))
    except InvalidManifestError as e:
        refused_cleanly(e)
        return
    for document in documents:
        parse_or_refuse(document)
