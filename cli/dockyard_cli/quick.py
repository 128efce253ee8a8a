"""`dockyard run` without click: the fast path of the command that most wants to be fast.

Starting Python and importing click costs more than starting the container itself, so a
plain `dockyard run [FLAGS] IMAGE [COMMAND...]` is parsed here, from the same flag table
the click command is built from (`flags.RUN_FLAGS`), and goes straight to the daemon.
Anything this parser does not take as certainly valid (help, an unknown or misspelt flag,
a bad value, global options before `run`) returns None, and the click command handles
the whole command line: its help and its error messages stay the only ones.
"""

from __future__ import annotations

from dockyard_cli.flags import RUN_FLAGS, RUN_ONLY_FLAGS, Flag, FlagError

TYPE_CHECKING = False  # typing costs `dockyard run` milliseconds of start-up
if TYPE_CHECKING:
    from typing import Any

_FLAGS = (*RUN_FLAGS, *RUN_ONLY_FLAGS)
_BY_NAME = {name: flag for flag in _FLAGS for name in flag.names}


def parse_run(args: list[str]) -> dict[str, Any] | None:
    """The options of `run ARGS` (flag dest -> value, `image`, `command`), or None."""
    scanned = _scan(args)
    if scanned is None or not scanned[1]:
        return None  # not understood, or no IMAGE: click says what is wrong
    given, positional = scanned
    try:
        options = {flag.dest: _value(flag, given.get(flag.dest)) for flag in _FLAGS}
    except FlagError:
        return None
    options["image"], options["command"] = positional[0], tuple(positional[1:])
    return options


def _scan(args: list[str]) -> tuple[dict[str, list[str]], list[str]] | None:
    """The texts given to each flag (dest -> texts) and the words from IMAGE on, or None.

    Options end at the first word that is not one (or after `--`), as `docker run` and the
    click command (no interspersed arguments) read them.
    """
    given: dict[str, list[str]] = {}
    at = 0
    while at < len(args):
        word = args[at]
        at += 1
        if word == "--":
            return given, args[at:]
        if not word.startswith("-") or word == "-":
            return given, args[at - 1:]
        match = _match(word)
        if match is None:
            return None
        flag, value = match
        if value is None and not flag.is_switch:
            if at == len(args):
                return None
            value = args[at]
            at += 1
        given.setdefault(flag.dest, []).append(value or "")
    return given, []


def _match(word: str) -> tuple[Flag, str | None] | None:
    """The flag `word` names and its attached value (`--name=web`, `-eK=V`), or None."""
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        flag, attached = _BY_NAME.get(name), value if eq else None
    elif word in _BY_NAME:
        flag, attached = _BY_NAME[word], None
    else:
        flag, attached = _BY_NAME.get(word[:2]), word[2:]
    if flag is None or (flag.is_switch and attached is not None):
        return None
    return flag, attached


def _value(flag: Flag, texts: list[str] | None) -> Any:
    """A flag's value from the texts it was given (None: not given)."""
    if flag.is_switch:
        return texts is not None
    if texts is None:
        if flag.multiple or flag.default is None:
            return flag.default
        texts = [flag.default]
    if not flag.multiple:
        texts = texts[-1:]  # the last one wins, as with click
    if any(flag.choices and text not in flag.choices for text in texts):
        raise FlagError(f"not one of {', '.join(flag.choices)}")
    values = tuple(flag.parse(text) if flag.parse else text for text in texts)
    return values if flag.multiple else values[0]


def main(argv: list[str]) -> int | None:
    """Run `argv` if it is a `run` this module understands: the exit code, else None."""
    if not argv or argv[0] != "run":
        return None
    options = parse_run(argv[1:])
    if options is None:
        return None
    from dockyard_cli import launch  # noqa: PLC0415 -- only once the fast path is taken

    detach, auto_remove = options.pop("detach"), options.pop("auto_remove")
    if launch.conflict(options, auto_remove=auto_remove):
        return None
    from dockyard_cli.client import connect  # noqa: PLC0415
    from dockyard_shim.daemon.client import DaemonError  # noqa: PLC0415

    try:
        return launch.run(connect(), options, detach=detach, auto_remove=auto_remove)
    except DaemonError as e:
        e.show()
        return e.exit_code
