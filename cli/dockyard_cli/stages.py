"""The read-only views of the cluster commands: `dockyard stages` (the delivery pipeline at
a glance), `dockyard promote list` and `promote show` (which the `promote` group adds), and
what they share with the promote commands: ages, short digests, which gate holds a
promotion, tables, the rules for names.

Reads Stages and Promotions as the API server has them, as plain JSON: what this shows
must not depend on the CLI's models being as new as the operator that wrote the status.
The view is computed by pure functions (`pipeline`, `view`, `rows`) from the objects and
the time, so a test can check them without a cluster.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click

from dockyard_cli.kubeapi import (
    ApiError,
    Client,
    KubeError,
    NotFoundError,
    cluster_options,
    connect,
    path,
    reported,
)

REQUESTED_BY = "dockyard.dev/requested-by"
"""The annotation the admission webhook writes with the user who created a Promotion."""
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL = re.compile(rf"^{_LABEL}$")
DNS_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
ENDED = ("Failed", "RolledBack")
"""The phases a promotion never leaves (`Succeeded` ends once its rollback window closed:
then `completedAt` is set)."""

Obj = dict[str, Any]


@dataclass(frozen=True)
class Running:
    """A digest that runs in a stage."""

    image: str
    digest: str
    since: str
    promotion: str
    """`namespace/name` of the Promotion that brought it."""


@dataclass(frozen=True)
class Held:
    """A promotion into a stage that has not ended, and the gate that holds it."""

    namespace: str
    name: str
    phase: str
    gate: str
    """The first gate whose state is `Waiting`; empty when none is."""
    message: str

    def describe(self) -> str:
        """`web-2 Waiting Approval: 0 of 2 approvals`."""
        held = f" {self.gate}: {self.message}" if self.gate else ""
        return f"{self.name} {self.phase}{held}"


@dataclass(frozen=True)
class StageView:
    """One stage as `dockyard stages` shows it."""

    name: str
    upstream: str | None
    phase: str
    frozen: bool
    """The emergency stop (`spec.frozen`); `phase` is also `Frozen` in a freeze window."""
    namespaces: tuple[str, ...]
    images: tuple[Running, ...]
    waiting: tuple[Held, ...]


# ------------------------------------------------------------------ shared views

def parse_time(text: object) -> datetime.datetime | None:
    """A Kubernetes time (`2026-05-09T10:00:00Z`), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def age(text: object, now: datetime.datetime) -> str:
    """How long ago, in the largest unit that still says at least 2 of it: `45s`, `5m`,
    `2h`, `3d`, `2y` (as kubectl's AGE columns); `-` when unknown."""
    moment = parse_time(text)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((365 * 86400, "y"), (86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def short_digest(digest: str) -> str:
    """`sha256:abcdef123456`: the algorithm and 12 hex digits, as `docker images`."""
    algorithm, _, hexes = digest.partition(":")
    return f"{algorithm}:{hexes[:12]}" if hexes else digest


def ended(promotion: Obj) -> bool:
    """Whether the promotion will change no more: failed, rolled back, or succeeded and
    through its stage's rollback window."""
    status = promotion.get("status") or {}
    phase = status.get("phase")
    return phase in ENDED or (phase == "Succeeded" and bool(status.get("completedAt")))


def phase_of(promotion: Obj) -> str:
    return str((promotion.get("status") or {}).get("phase") or "Pending")


def holding(promotion: Obj) -> Held:
    """The promotion, and the first gate of its status that waits."""
    meta = promotion.get("metadata") or {}
    gates = (promotion.get("status") or {}).get("gates") or []
    waiting: Obj = next((g for g in gates if g.get("state") == "Waiting"), {})
    return Held(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
                phase=phase_of(promotion), gate=str(waiting.get("gate") or ""),
                message=str(waiting.get("message") or ""))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell and three spaces apart, as kubectl prints."""
    lines = [list(header), *[list(row) for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                          strict=True)).rstrip()
                     for line in lines)


# ------------------------------------------------------------------ names

def name_check(kind: str, pattern: re.Pattern[str], longest: int, example: str
               ) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback refusing a name the API server would refuse."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None and (len(value) > longest or not pattern.fullmatch(value)):
            raise click.BadParameter(
                f"{value!r} is not {kind}: use at most {longest} lower-case letters, digits "
                f"and '-'{'' if pattern is DNS_LABEL else ' or .'}, starting and ending with "
                f"a letter or digit (for example {example!r})", ctx, param)
        return value

    return check


check_namespace = name_check("a namespace", DNS_LABEL, 63, "prod")
check_promotion_name = name_check("a promotion name", DNS_SUBDOMAIN, 253, "web-2-to-prod")
namespace_option = click.option(
    "-n", "--namespace", callback=check_namespace, metavar="NAMESPACE",
    help="The Promotion's namespace (default: the kubeconfig context's, else it is looked "
         "up by name in every namespace).")
output_option = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="`json` prints the Promotion objects as the API server has them.")


# ------------------------------------------------------------------ the pipeline

def pipeline(stages: Iterable[Obj]) -> list[Obj]:
    """The stages in pipeline order: from each first stage (no upstream, by name) down its
    downstream stages (depth first, by name); the stages no such walk reaches (an unknown
    upstream, a cycle) after, by name."""
    by_name = {str(s["metadata"]["name"]): s for s in stages}
    downstream: dict[str | None, list[str]] = {}
    for name in sorted(by_name):
        upstream = (by_name[name].get("spec") or {}).get("upstream")
        downstream.setdefault(upstream, []).append(name)
    ordered: list[str] = []
    todo = list(reversed(downstream.get(None, [])))
    while todo:
        name = todo.pop()
        if name in ordered:
            continue
        ordered.append(name)
        todo += reversed(downstream.get(name, []))
    ordered += sorted(set(by_name) - set(ordered))
    return [by_name[name] for name in ordered]


def view(stage: Obj, promotions: Iterable[Obj], now: datetime.datetime) -> StageView:
    """What `dockyard stages` shows of `stage`; `promotions` are those into it."""
    spec, status = stage.get("spec") or {}, stage.get("status") or {}
    frozen = bool(spec.get("frozen"))
    phase = str(status.get("phase") or "-")
    if frozen or _in_freeze_window(spec, now):
        phase = "Frozen"  # before the operator writes it, and for a window (it does not)
    images = tuple(Running(image=str(i.get("image")), digest=str(i.get("digest")),
                           since=str(i.get("since") or ""),
                           promotion=str(i.get("promotion") or ""))
                   for i in sorted(status.get("images") or [], key=lambda i: str(i.get("image"))))
    waiting = tuple(holding(p) for p in sorted(
        (p for p in promotions if not ended(p)),
        key=lambda p: (str(p["metadata"].get("creationTimestamp") or ""),
                       str(p["metadata"]["name"]))))
    return StageView(name=str(stage["metadata"]["name"]), upstream=spec.get("upstream"),
                     phase=phase, frozen=frozen, namespaces=tuple(spec.get("namespaces") or ()),
                     images=images, waiting=waiting)


def _in_freeze_window(spec: Obj, now: datetime.datetime) -> bool:
    for window in spec.get("freezeWindows") or []:
        start, end = parse_time(window.get("start")), parse_time(window.get("end"))
        if start is not None and end is not None and start <= now < end:
            return True
    return False


HEADER = ("STAGE", "UPSTREAM", "PHASE", "IMAGE", "DIGEST", "SINCE", "WAITING")


def rows(views: Iterable[StageView], now: datetime.datetime) -> Iterator[tuple[str, ...]]:
    """The table's rows: per stage, one per image and per waiting promotion side by side
    (at least one row; `-` says there is none, a blank cell that the list ended)."""
    for stage in views:
        images = [(i.image, short_digest(i.digest), age(i.since, now)) for i in stage.images]
        waiting = [held.describe() for held in stage.waiting]
        for index in range(max(len(images), len(waiting), 1)):
            none = "-" if index == 0 else ""
            image = images[index] if index < len(images) else (none, none, none)
            held = waiting[index] if index < len(waiting) else none
            yield (stage.name, stage.upstream or "-", stage.phase, *image, held)


def list_stages(client: Client) -> list[Obj]:
    """Every Stage; a cluster without the kind says what is missing."""
    try:
        return client.list(path("stages"), doing="listing stages")
    except NotFoundError as e:
        raise KubeError(f"{e} (is Dockyard installed? Its CRDs define the Stage kind: "
                        "`dockyard crd print | kubectl apply -f -`)") from e


def _views(client: Client, now: datetime.datetime) -> list[StageView]:
    stages = list_stages(client)
    try:
        promotions = client.list(path("promotions"), doing="listing promotions")
    except ApiError as e:
        if e.status != 403:
            raise
        click.echo(f"Warning: {e} (the WAITING column stays empty)", err=True)
        promotions = []
    into: dict[str, list[Obj]] = {}
    for promotion in promotions:
        into.setdefault(str((promotion.get("spec") or {}).get("stage")), []).append(promotion)
    return [view(stage, into.get(str(stage["metadata"]["name"]), []), now)
            for stage in pipeline(stages)]


@click.command("stages")
@cluster_options
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="`json` prints the same data for scripts: full "
                                      "digests, times, every waiting promotion's namespace.")
@reported
def command(*, kubeconfig: str | None, context: str | None, output: str) -> None:
    """Show the delivery pipeline: each stage, what runs in it, and what waits to enter.

    Stages come in pipeline order: from the first stage (the one without an upstream) down
    the stages whose upstream it is; stages outside that chain (an unknown upstream, a
    cycle) come last. A stage has one row per Image that runs in it:

    \b
      STAGE     the Stage
      UPSTREAM  the stage its versions come from
      PHASE     Ready; Frozen while an emergency stop or a freeze window holds
                promotions back; Invalid when the pipeline around it is broken
      IMAGE     an Image promoted into the stage, and the DIGEST it runs (shortened)
      SINCE     how long that digest has been in the stage
      WAITING   a promotion into the stage that has not ended: its name, its phase,
                and the gate that holds it with the gate's message, e.g.
                `web-2 Waiting Approval: 0 of 2 approvals`

    The cluster is found as kubectl finds it (see --kubeconfig). Reading Promotions needs
    the right to list them in every namespace; without it, WAITING stays empty.

    \b
    Examples:
      dockyard stages
      dockyard stages --context prod-cluster -o json
    """
    client = connect(kubeconfig, context)
    now = datetime.datetime.now(datetime.UTC)
    views = _views(client, now)
    if output == "json":
        click.echo(json.dumps([asdict(v) for v in views], indent=2))
        return
    if not views:
        click.echo("No stages: create Stage objects (see examples/stages.yaml).", err=True)
        return
    click.echo(table(HEADER, rows(views, now)))


# ------------------------------------------------------------------ promotions

def get_promotion(client: Client, name: str, namespace: str) -> Obj:
    """The promotion `namespace/name` (NotFoundError if there is none)."""
    return client.get(path("promotions", namespace=namespace, name=name),
                      doing=f"reading promotion {namespace}/{name}")


def find_promotion(client: Client, name: str, namespace: str | None) -> Obj:
    """The promotion `name`: in `namespace`, else the context's, else wherever the one
    promotion of that name is."""
    namespace = namespace or client.connection.namespace or None
    if namespace is not None:
        return get_promotion(client, name, namespace)
    found = client.list(path("promotions"), doing=f"looking for promotion {name}",
                        params={"fieldSelector": f"metadata.name={name}"})
    if not found:
        raise KubeError(f"no promotion {name} in any namespace (see `dockyard promote list "
                        "-A`)")
    if len(found) > 1:
        where = ", ".join(sorted(p["metadata"]["namespace"] for p in found))
        raise KubeError(f"promotions named {name} are in several namespaces ({where}): "
                        "pass -n NAMESPACE")
    return found[0]


@click.command("list", short_help="List promotions and the gates that hold them.")
@click.option("-n", "--namespace", callback=check_namespace, metavar="NAMESPACE",
              help="List the promotions of this namespace (default: the context's, else "
                   "every namespace).")
@click.option("-A", "--all-namespaces", is_flag=True, help="List those of every namespace.")
@output_option
@cluster_options
@reported
def list_promotions(*, namespace: str | None, all_namespaces: bool, output: str,
                    kubeconfig: str | None, context: str | None) -> None:
    """List promotions: their stage, images, phase and the gate that holds them.

    \b
    Examples:
      dockyard promote list -A
      dockyard promote list -n prod -o json
    """
    if namespace and all_namespaces:
        raise click.UsageError("-n and -A exclude each other: pick one")
    client = connect(kubeconfig, context)
    namespace = None if all_namespaces else namespace or client.connection.namespace or None
    found = client.list(path("promotions", namespace=namespace),
                        doing=f"listing promotions{f' in {namespace}' if namespace else ''}")
    found.sort(key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
    if output == "json":
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo(f"No promotions{f' in namespace {namespace}' if namespace else ''}.",
                   err=True)
        return
    now = datetime.datetime.now(datetime.UTC)
    # The gate's message last: it is the one cell of any length.
    header = ["NAME", "STAGE", "IMAGES", "PHASE", "AGE", "WAITING ON"]
    rows = [[p["metadata"]["name"], str(p["spec"].get("stage")),
             ", ".join(f"{i.get('image')}@{short_digest(str(i.get('digest')))}"
                       for i in p["spec"].get("images") or []),
             phase_of(p), age(p["metadata"].get("creationTimestamp"), now), _waiting_on(p)]
            for p in found]
    if namespace is None:
        header.insert(0, "NAMESPACE")
        for row, promotion in zip(rows, found, strict=True):
            row.insert(0, promotion["metadata"]["namespace"])
    click.echo(table(header, rows))


def _waiting_on(promotion: Obj) -> str:
    held = holding(promotion)
    if ended(promotion) or not held.gate:
        return "-"
    return f"{held.gate}: {held.message}"


@click.command("show", short_help="Show a promotion's gates, approvals and outcome.")
@click.argument("name", callback=check_promotion_name)
@namespace_option
@output_option
@cluster_options
@reported
def show_promotion(*, name: str, namespace: str | None, output: str,
                   kubeconfig: str | None, context: str | None) -> None:
    """Show the promotion NAME: its bundle, every gate's evidence, approvals, outcome.

    \b
    Example:
      dockyard promote show web-1a2b3c4d5e6f-to-prod -n prod
    """
    client = connect(kubeconfig, context)
    promotion = find_promotion(client, name, namespace)
    if output == "json":
        click.echo(json.dumps(promotion, indent=2))
        return
    click.echo(describe(promotion, datetime.datetime.now(datetime.UTC)))


def describe(promotion: Obj, now: datetime.datetime) -> str:
    """The text of `promote show`."""
    meta, spec = promotion["metadata"], promotion.get("spec") or {}
    status = promotion.get("status") or {}
    created = meta.get("creationTimestamp")
    source = f" (from {status['sourceStage']})" if status.get("sourceStage") else ""
    fields = [("Name", meta["name"]), ("Namespace", meta["namespace"]),
              ("Stage", f"{spec.get('stage')}{source}"), ("Phase", phase_of(promotion)),
              ("Requested by", (meta.get("annotations") or {}).get(REQUESTED_BY) or "-"),
              ("Reason", spec.get("reason") or "-"),
              ("Created", f"{created} ({age(created, now)} ago)" if created else "-")]
    lines = [f"{label + ':':<14}{value}" for label, value in fields]
    lines += _section("Images", [[i.get("image"), i.get("digest")]
                                 for i in spec.get("images") or []])
    lines += _section("Previous", [[i.get("image"), i.get("digest")]
                                   for i in status.get("previous") or []])
    lines += _section("Gates", [[g.get("gate"), g.get("state"), g.get("at"),
                                 g.get("message") or ""] for g in status.get("gates") or []],
                      header=["GATE", "STATE", "AT", "MESSAGE"])
    lines += _section("Approvals", [[a.get("by"), ", ".join(a.get("groups") or []) or "-",
                                     a.get("at") or "-", a.get("comment") or ""]
                                    for a in spec.get("approvals") or []],
                      header=["BY", "GROUPS", "AT", "COMMENT"])
    promoted = next((c for c in status.get("conditions") or []
                     if c.get("type") == "Promoted"), None)
    ends = [("Applied", status.get("appliedAt") or "-"),
            ("Completed", status.get("completedAt") or "-"),
            ("Git commit", status.get("gitCommit") or "-")]
    if promoted is not None:
        ends.append(("Outcome", f"{promoted.get('reason')}: {promoted.get('message')}"))
    lines += [f"{label + ':':<14}{value}" for label, value in ends]
    return "\n".join(lines)


def _section(title: str, rows: list[list[Any]], header: list[str] | None = None
             ) -> list[str]:
    if not rows:
        return [f"{title + ':':<14}-"]
    text = table(header or [""] * len(rows[0]), [[str(c) for c in row] for row in rows])
    body = text.splitlines()[0 if header else 1:]
    return [f"{title}:", *(f"  {line}" for line in body)]
