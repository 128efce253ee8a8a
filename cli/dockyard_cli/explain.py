"""`dockyard explain`: the documentation of a kind or field, like `kubectl explain`."""

from __future__ import annotations

import textwrap
from typing import Any

import click

from dockyard_api import API_VERSION, BY_KIND
from dockyard_api.crd import kind_schema


def _type_name(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = schema.get("type", "?")
    if kind == "array":
        return f"[]{_type_name(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type_name(schema['additionalProperties'])}"
    if "enum" in schema:
        return f"{kind} ({' | '.join(str(v) for v in schema['enum'])})"
    return str(kind)


def _wrap(text: str, indent: int) -> str:
    return "\n".join(textwrap.fill(p, width=96, initial_indent=" " * indent,
                                   subsequent_indent=" " * indent)
                     for p in text.split("\n\n"))


def explain(path: str) -> str:
    """The text `dockyard explain PATH` prints; raise click.BadParameter for a bad path."""
    head, *fields = path.split(".")
    lookup = {name.lower(): name for name in BY_KIND}
    lookup.update({cls.kind_info.plural: name for name, cls in BY_KIND.items()})
    lookup.update({s: name for name, cls in BY_KIND.items() for s in cls.kind_info.short_names})
    kind = lookup.get(head.lower())
    if kind is None:
        raise click.BadParameter(f"unknown kind {head!r}: use one of {', '.join(BY_KIND)}",
                                 param_hint="PATH")
    schema = kind_schema(kind)
    walked: list[str] = []
    for name in fields:
        while schema.get("type") == "array":
            schema = schema["items"]
        props = schema.get("properties", {})
        if name not in props:
            where = ".".join([kind.lower(), *walked])
            raise click.BadParameter(
                f"{where} has no field {name!r}; its fields: {', '.join(props) or 'none'}",
                param_hint="PATH")
        schema = props[name]
        walked.append(name)
    lines = [f"KIND:     {kind}", f"VERSION:  {API_VERSION}"]
    if walked:
        lines.append(f"FIELD:    {'.'.join(walked)} <{_type_name(schema)}>")
    lines += ["", "DESCRIPTION:", _wrap(schema.get("description", "(none)"), 4)]
    for rule in schema.get("x-kubernetes-validations", []):
        if rule.get("fieldPath") != ".metadata.name":
            lines.append(_wrap(f"Rule: {rule['message']}", 4))
    item = schema
    while item.get("type") == "array":
        item = item["items"]
    props = item.get("properties", {})
    if props:
        lines += ["", "FIELDS:"]
        required = set(item.get("required", []))
        for name, sub in props.items():
            flag = " -required-" if name in required else ""
            default = f" (default: {sub['default']})" if "default" in sub \
                and sub["default"] not in ({}, []) else ""
            lines.append(f"  {name}\t<{_type_name(sub)}>{flag}{default}")
            if sub.get("description"):
                lines.append(_wrap(sub["description"].split("\n\n")[0], 4))
    return "\n".join(lines)


@click.command("explain")
@click.argument("path", metavar="KIND[.FIELD]...")
def command(path: str) -> None:
    """Show the documentation of a kind or one of its fields.

    \b
    Examples:
      dockyard explain container
      dockyard explain container.spec.resources
      dockyard explain stage.spec.gates.approval
    """
    click.echo(explain(path))
