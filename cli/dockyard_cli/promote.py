"""`dockyard promote`: ask for digests to enter a stage, follow the promotion, approve it.

The command writes Promotions and reads them; the operator does everything else (the
gates, the delivery, the rollback). Arguments are checked here, at the edge, with the
API's own rules (image names, digests, stage names), so a typo is a usage error naming the
argument rather than a 422 from the API server. The patterns are repeated here to spare
every command the models' import time; a test checks that they are the models'.

Approvals are appended with a merge patch conditional on the resourceVersion read: the
list is replaced as a whole, so a concurrent approval must not be lost (a conflict reads
again and retries). Who approved is not ours to say: the admission webhook writes `by`,
`groups` and `at` from the identity the API server authenticated.

`promote list` and `promote show` only read: they live in `stages` with the other views,
and the group adds them.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import click

from dockyard_cli.kubeapi import (
    Client,
    ConflictError,
    KubeError,
    NotFoundError,
    cluster_options,
    connect,
    path,
    reported,
)
from dockyard_cli.stages import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Obj,
    check_namespace,
    check_promotion_name,
    ended,
    find_promotion,
    get_promotion,
    holding,
    list_promotions,
    list_stages,
    name_check,
    namespace_option,
    phase_of,
    short_digest,
    show_promotion,
)

API_VERSION = "dockyard.dev/v1alpha1"
DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_IMAGES = 32
"""A Promotion's bundle holds at most this many images (the CRD's maxItems)."""
MAX_REASON = 1024
"""The longest `reason` (and approval `comment`) the CRD accepts."""
APPROVE_ATTEMPTS = 5


# ------------------------------------------------------------------ arguments

_stage_name = name_check("a stage name", DNS_LABEL, 63, "prod")


class ImageDigest(click.ParamType[tuple[str, str]]):
    """`IMAGE=DIGEST`: an Image object's name and the content digest to promote."""

    name = "IMAGE=DIGEST"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        image, equals, digest = text.partition("=")
        if not equals:
            hint = " (not IMAGE@DIGEST)" if "@" in text else ""
            self.fail(f"{text!r} is not IMAGE=DIGEST{hint}: write the Image's name, '=' and "
                      "the digest, for example web=sha256:<64 hex digits>", param, ctx)
        if len(image) > 253 or not DNS_SUBDOMAIN.fullmatch(image):
            self.fail(f"{image!r} in {text!r} is not an Image name: name the Image object "
                      "(lower-case letters, digits, '-' and '.', for example shop-api), not a "
                      "registry reference", param, ctx)
        if not DIGEST.fullmatch(digest):
            self.fail(f"{digest!r} in {text!r} is not a content digest: write sha256: "
                      "followed by 64 lower-case hex digits", param, ctx)
        return image, digest


class Duration(click.ParamType[float]):
    """`30s`, `10m`, `1h30m`: a duration written as the API writes them."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        text = str(value)
        if not DURATION.fullmatch(text):
            self.fail(f"{text!r} is not a duration: write it like 30s, 10m or 1h30m",
                      param, ctx)
        return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def default_name(images: Sequence[tuple[str, str]], stage: str) -> str:
    """`web-1a2b3c4d5e6f-to-prod`: the first image, its digest's first 12 hex digits, the
    stage. The same request gets the same name, so running it twice creates nothing new."""
    image, digest = images[0]
    suffix = f"-{digest.partition(':')[2][:12]}-to-{stage}"
    return image[:253 - len(suffix)].rstrip(".-") + suffix


# ------------------------------------------------------------------ the group

class _PromoteGroup(click.Group):
    """`promote STAGE IMAGE=DIGEST…` runs `create`; `promote approve|list|show|wait` the
    subcommand. Its help lists create's options too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["create", *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["STAGE IMAGE=DIGEST... [OPTIONS] | COMMAND [ARGS]..."]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Arguments"):
            formatter.write_dl(ARGUMENTS)
        create = self.commands["create"]
        records = [r for p in create.get_params(ctx)
                   if isinstance(p, click.Option) and (r := p.get_help_record(ctx))]
        with formatter.section("Options (promote STAGE IMAGE=DIGEST...)"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)


ARGUMENTS = [
    ("STAGE", "The Stage the digests enter (`dockyard stages` lists them)."),
    ("IMAGE=DIGEST...", "The name of an Image object and the digest to promote, e.g. "
                        "web=sha256:<64 hex digits>. Several move together, as one bundle."),
]


@click.group("promote", cls=_PromoteGroup)
def promote() -> None:
    """Move verified image digests into a stage; follow, approve and list promotions.

    `dockyard promote STAGE IMAGE=DIGEST...` creates a Promotion: the request that the
    Image objects named IMAGE, at the digests given, enter STAGE. The operator then checks
    the stage's gates in order (the digests entered the upstream stage, the verification
    run, the soak time there, the approvals, no freeze), moves the digests in, and during
    the stage's rollback window watches them, restoring the previous digests if they fail.

    The Promotion goes into the namespace given with -n, else into the kubeconfig
    context's namespace if the stage owns it, else into the stage's first namespace. Its
    name is IMAGE-DIGEST-to-STAGE (first image, 12 hex digits) unless --name says.
    With --wait the command follows it, one line per gate that changes, and exits 0 once
    it succeeded and stayed up through the rollback window, 1 if it failed or was rolled
    back.

    \b
    Examples:
      dockyard promote staging web=sha256:1a2b… api=sha256:9f86… --reason "release 3.2"
      dockyard promote prod web=sha256:1a2b… --wait --timeout 1h
      dockyard promote approve web-1a2b3c4d5e6f-to-prod --comment "dashboards green"
      dockyard promote list -A
      dockyard promote show web-1a2b3c4d5e6f-to-prod -n prod
    """


_timeout_option = click.option(
    "--timeout", type=Duration(), default="10m", show_default=True,
    help="How long --wait follows the promotion before giving up (exit 1; the promotion "
         "goes on).")


@promote.command(
    "create", short_help="Create a promotion: the same as `promote STAGE IMAGE=DIGEST...`.")
@click.argument("stage", callback=_stage_name)
@click.argument("images", nargs=-1, required=True, type=ImageDigest(),
                metavar="IMAGE=DIGEST...")
@click.option("-n", "--namespace", callback=check_namespace, metavar="NAMESPACE",
              help="Create the Promotion there: a namespace of the stage (default: the "
                   "context's namespace if the stage owns it, else the stage's first).")
@click.option("--reason", default="", help="Why, for the record (the Promotion's "
                                           "spec.reason, at most 1024 characters).")
@click.option("--name", callback=check_promotion_name, metavar="NAME",
              help="The Promotion's name (default: IMAGE-DIGEST-to-STAGE of the first image, "
                   "e.g. web-1a2b3c4d5e6f-to-prod).")
@click.option("--wait", is_flag=True,
              help="Follow the promotion until it ends, printing each gate change; exit 0 "
                   "if it succeeded (and survived the rollback window), 1 if not.")
@_timeout_option
@cluster_options
@reported
def create(*, stage: str, images: tuple[tuple[str, str], ...], namespace: str | None,
           reason: str, name: str | None, wait: bool, timeout: float,
           kubeconfig: str | None, context: str | None) -> None:
    """Create a promotion: what `dockyard promote STAGE IMAGE=DIGEST...` does.

    STAGE is the Stage the digests enter; each IMAGE=DIGEST names an Image object and the
    digest to promote (web=sha256:<64 hex digits>). See `dockyard promote --help`.
    """
    _check_bundle(images, reason)
    client = connect(kubeconfig, context)
    target = _stage(client, stage)
    namespace = _target_namespace(target, namespace, client.connection.namespace)
    name = name or default_name(images, stage)
    _warn_if_not_upstream(client, target, images)
    spec: Obj = {"stage": stage, "images": [{"image": i, "digest": d} for i, d in images]}
    if reason:
        spec["reason"] = reason
    body = {"apiVersion": API_VERSION, "kind": "Promotion",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    key = f"{namespace}/{name}"
    try:
        created = client.create(path("promotions", namespace=namespace), body,
                                doing=f"creating promotion {key}")
    except ConflictError as e:
        if e.reason != "AlreadyExists":
            raise
        existing = get_promotion(client, name, namespace)
        raise KubeError(f"promotion {key} already exists ({phase_of(existing)}): see it with "
                        f"`dockyard promote show {name} -n {namespace}`, or pass --name to "
                        "promote these digests again") from e
    click.echo(f"promotion {key} created")
    approval = ((target.get("spec") or {}).get("gates") or {}).get("approval")
    if approval and not wait:
        required = int(approval.get("required") or 1)
        click.echo(f"it needs {required} approval{'s' if required > 1 else ''}: "
                   f"dockyard promote approve {name} -n {namespace}")
    if wait:
        raise SystemExit(follow(client, created, timeout=timeout))


def _check_bundle(images: tuple[tuple[str, str], ...], reason: str) -> None:
    names = [image for image, _ in images]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise click.BadParameter(f"{', '.join(twice)} named more than once: a promotion moves "
                                 "one digest per image", param_hint="'IMAGE=DIGEST...'")
    if len(images) > MAX_IMAGES:
        raise click.BadParameter(f"{len(images)} images: one promotion moves at most "
                                 f"{MAX_IMAGES}", param_hint="'IMAGE=DIGEST...'")
    if len(reason) > MAX_REASON:
        raise click.BadParameter(f"{len(reason)} characters: at most {MAX_REASON}",
                                 param_hint="'--reason'")


def _stage(client: Client, name: str) -> Obj:
    try:
        return client.get(path("stages", name=name), doing=f"reading stage {name}")
    except NotFoundError as e:
        known = sorted(s["metadata"]["name"] for s in list_stages(client))
        raise KubeError(f"no stage {name}: the stages are {', '.join(known) or 'none yet'}"
                        ) from e


def _target_namespace(stage: Obj, given: str | None, contexts: str) -> str:
    owned = list((stage.get("spec") or {}).get("namespaces") or [])
    name = stage["metadata"]["name"]
    if not owned:
        raise KubeError(f"stage {name} owns no namespace: a promotion into it has nowhere to "
                        "live (add one to its spec.namespaces)")
    if given is not None and given not in owned:
        raise KubeError(f"stage {name} owns {', '.join(owned)}: create the promotion in one "
                        f"of them, not in {given}")
    if given is not None:
        return given
    return contexts if contexts in owned else owned[0]


def _warn_if_not_upstream(client: Client, stage: Obj,
                          images: tuple[tuple[str, str], ...]) -> None:
    """Say so when a digest never entered the upstream stage: the Upstream gate will fail
    the promotion (the operator decides; the stage's status may be a moment behind)."""
    upstream = (stage.get("spec") or {}).get("upstream")
    if not upstream:
        return
    try:
        before = client.get(path("stages", name=upstream), doing=f"reading stage {upstream}")
    except NotFoundError:
        return
    status = before.get("status") or {}
    entered = {(e.get("image"), e.get("digest")) for e in
               [*(status.get("images") or []), *(status.get("history") or [])]
               if not e.get("rolledBack")}
    missing = [f"{i}@{short_digest(d)}" for i, d in images if (i, d) not in entered]
    if missing:
        click.echo(f"Warning: {', '.join(missing)} never entered stage {upstream}: the "
                   f"Upstream gate will fail this promotion (promote into {upstream} first)",
                   err=True)


# ------------------------------------------------------------------ following one

def follow(client: Client, promotion: Obj, *, timeout: float) -> int:
    """Print the promotion's gate changes until it ends; the exit status (0: succeeded)."""
    meta = promotion["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    key = f"{namespace}/{name}"
    deadline = time.monotonic() + timeout
    printer = _Changes()
    printer.show(promotion)
    while not ended(promotion):
        left = deadline - time.monotonic()
        if left <= 0:
            held = holding(promotion)
            on = f" ({held.gate}: {held.message})" if held.gate else ""
            raise KubeError(f"promotion {key} is still {held.phase}{on} after "
                            f"{_span(timeout)}; it goes on: follow it again with "
                            f"`dockyard promote wait {name} -n {namespace}`")
        started = time.monotonic()
        for event in client.watch(
                path("promotions", namespace=namespace), doing=f"watching promotion {key}",
                params={"fieldSelector": f"metadata.name={name}",
                        "resourceVersion": promotion["metadata"]["resourceVersion"]},
                seconds=max(1, math.ceil(min(left, 300)))):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") != 410:
                    raise KubeError(f"watching promotion {key}: {obj.get('message')}")
                # 410 Gone: the version is too old to watch from; read it, watch from there.
                promotion = get_promotion(client, name, namespace)
                printer.show(promotion)
                break
            if kind == "DELETED":
                raise KubeError(f"promotion {key} was deleted")
            if kind not in ("ADDED", "MODIFIED"):
                continue  # BOOKMARK, or a type from a newer server
            promotion = obj
            printer.show(promotion)
            if ended(promotion) or time.monotonic() > deadline:
                break
        else:
            if time.monotonic() - started < 1:
                time.sleep(1)  # a server that ends watches at once is not asked in a loop
    return _outcome(promotion, key)


def _outcome(promotion: Obj, key: str) -> int:
    status = promotion.get("status") or {}
    phase = phase_of(promotion)
    promoted: Obj = next((c for c in status.get("conditions") or []
                          if c.get("type") == "Promoted"), {})
    if phase == "Succeeded":
        said = f": {promoted['message']}" if promoted.get("message") else ""
        click.echo(f"promotion {key} succeeded{said}")
        return 0
    failed: Obj = next((g for g in status.get("gates") or [] if g.get("state") == "Failed"), {})
    reason = promoted.get("message") or failed.get("message") or "no reason given"
    verb = "was rolled back" if phase == "RolledBack" else "failed"
    click.echo(f"Error: promotion {key} {verb}: {reason}", err=True)
    return 1


class _Changes:
    """Prints what changed in a promotion since the last look: a line per gate whose state
    (or message) changed, with the phase; the phase alone when only it changed."""

    def __init__(self) -> None:
        self._phase = ""
        self._gates: dict[str, tuple[str, str]] = {}

    def show(self, promotion: Obj) -> None:
        phase = phase_of(promotion)
        lines = []
        for gate in (promotion.get("status") or {}).get("gates") or []:
            name, state = str(gate.get("gate")), str(gate.get("state"))
            message = str(gate.get("message") or "")
            before = self._gates.get(name)
            self._gates[name] = (state, message)
            # A waiting gate's message may count time (`5m of 1h in stage staging`) at
            # every look: a change of numbers alone is not news.
            if before is not None and before[0] == state and \
                    re.sub(r"\d+", "#", before[1]) == re.sub(r"\d+", "#", message):
                continue
            lines.append(f"{phase:<10} {name} {state}" + (f": {message}" if message else ""))
        if not lines and phase != self._phase:
            lines.append(phase)
        self._phase = phase
        for line in lines:
            click.echo(line)


def _span(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, rest = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{rest}s" if rest or not text else "")


# ------------------------------------------------------------------ approve, wait

@promote.command("approve", short_help="Add your approval to a promotion.")
@click.argument("name", callback=check_promotion_name)
@namespace_option
@click.option("--comment", default="", help="What you checked, for the record.")
@cluster_options
@reported
def approve(*, name: str, namespace: str | None, comment: str, kubeconfig: str | None,
            context: str | None) -> None:
    """Approve the promotion NAME: add your approval to it.

    The approval is written in the name of the kubeconfig's user (or `me`), but the
    admission webhook replaces that with who the API server says you are, your groups
    and the time: nobody can approve in another's name. Whether your approval counts is
    the stage's policy (its approvers and groups; not the promotion's author unless
    allowed): `dockyard promote show NAME` shows the Approval gate's verdict.

    \b
    Example:
      dockyard promote approve web-1a2b3c4d5e6f-to-prod -n prod --comment "canary green"
    """
    if len(comment) > MAX_REASON:
        raise click.BadParameter(f"{len(comment)} characters: at most {MAX_REASON}",
                                 param_hint="'--comment'")
    client = connect(kubeconfig, context)
    me = client.connection.user or "me"
    promotion = find_promotion(client, name, namespace)
    namespace = promotion["metadata"]["namespace"]
    key = f"{namespace}/{name}"
    for _ in range(APPROVE_ATTEMPTS):
        if ended(promotion):
            raise KubeError(f"promotion {key} has ended ({phase_of(promotion)}): there is "
                            "nothing to approve")
        approvals = list((promotion.get("spec") or {}).get("approvals") or [])
        if any(a.get("by") == me for a in approvals):
            click.echo(f"promotion {key} already has an approval by {me}")
            return
        mine = {"by": me, "at": datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"), **({"comment": comment} if comment else {})}
        patch = {"metadata": {"resourceVersion": promotion["metadata"]["resourceVersion"]},
                 "spec": {"approvals": [*approvals, mine]}}
        try:
            updated = client.patch(path("promotions", namespace=namespace, name=name), patch,
                                   doing=f"approving promotion {key}")
        except ConflictError:
            from dockyard_common import get_logger  # noqa: PLC0415 -- rare: worth 150 ms

            get_logger(__name__).info("the promotion changed since it was read; reading it "
                                      "again", promotion=key)
            promotion = get_promotion(client, name, namespace)
            continue
        _approved(updated, approvals, key)
        return
    raise KubeError(f"promotion {key} kept changing while it was being approved: try again")


def _approved(updated: Obj, before: list[Obj], key: str) -> None:
    added = [a for a in (updated.get("spec") or {}).get("approvals") or [] if a not in before]
    if not added:
        click.echo(f"promotion {key} already has your approval (one per user)")
        return
    mine = added[-1]
    groups = f" (groups: {', '.join(mine['groups'])})" if mine.get("groups") else ""
    click.echo(f"approved promotion {key} as {mine.get('by')}{groups}")


@promote.command("wait", short_help="Follow a promotion until it ends, as --wait does.")
@click.argument("name", callback=check_promotion_name)
@namespace_option
@_timeout_option
@cluster_options
@reported
def wait(*, name: str, namespace: str | None, timeout: float, kubeconfig: str | None,
         context: str | None) -> None:
    """Follow the promotion NAME until it ends, as `promote --wait` does.

    Exits 0 once it succeeded and outlived the stage's rollback window, 1 if it failed,
    was rolled back, or is still going after --timeout.

    \b
    Example:
      dockyard promote wait web-1a2b3c4d5e6f-to-prod -n prod --timeout 1h
    """
    client = connect(kubeconfig, context)
    raise SystemExit(follow(client, find_promotion(client, name, namespace), timeout=timeout))


promote.add_command(list_promotions)
promote.add_command(show_promotion)
