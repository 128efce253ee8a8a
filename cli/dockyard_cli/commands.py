"""The `dockyard` click group: global options and lazily loaded commands.

Commands are imported only when invoked, so `dockyard run` does not pay for importing
the API models (pydantic) that `dockyard validate` needs, and vice versa; `dockyard
--help` lists them from `COMMANDS` without importing any.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from dockyard_common import configure_logging
from dockyard_shim.daemon.client import DaemonError

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("dockyard_cli.containers:run",
            "Run a command in a new container."),
    "create": ("dockyard_cli.containers:create",
               "Create a container without starting it; print its id."),
    "start": ("dockyard_cli.containers:start",
              "Start one or more created or stopped containers."),
    "ps": ("dockyard_cli.containers:ps",
           "List containers (running ones unless -a)."),
    "logs": ("dockyard_cli.containers:logs",
             "Print a container's output (stdout and stderr, in order)."),
    "stop": ("dockyard_cli.containers:stop",
             "Stop containers: SIGTERM, then SIGKILL after the timeout."),
    "kill": ("dockyard_cli.containers:kill",
             "Send a signal to containers' main process."),
    "rm": ("dockyard_cli.containers:rm",
           "Remove containers (a running one only with -f)."),
    "wait": ("dockyard_cli.containers:wait",
             "Block until containers stop; print their exit codes."),
    "inspect": ("dockyard_cli.containers:inspect",
                "Print everything known about containers, as JSON."),
    "stats": ("dockyard_cli.containers:stats",
              "Show memory, cpu time and process counts of running containers (one snapshot)."),
    "pause": ("dockyard_cli.containers:pause",
              "Freeze every process of containers."),
    "unpause": ("dockyard_cli.containers:unpause",
                "Thaw paused containers."),
    "exec": ("dockyard_cli.containers:exec_",
             "Run a command in a running container; exit with its exit code."),
    "diff": ("dockyard_cli.containers:diff",
             "List what a container changed in its image's filesystem, like `docker diff`."),
    "commit": ("dockyard_cli.containers:commit",
               "Create a new image from a container's changes, like `docker commit`."),
    "image": ("dockyard_cli.images:image",
              "Manage images (more image commands are top-level: images, rmi, tag, pull...)."),
    "load": ("dockyard_cli.images:load",
             "Load images from an archive, like `docker load`."),
    "import": ("dockyard_cli.images:import_",
               "Make a one-layer image from a root filesystem tar, like `docker import`."),
    "images": ("dockyard_cli.images:images",
               "List the images on this machine, like `docker images`."),
    "rmi": ("dockyard_cli.images:rmi",
            "Remove images, like `docker rmi`."),
    "tag": ("dockyard_cli.images:tag",
            "Give the image SOURCE (a name or an id) the name TARGET, like `docker tag`."),
    "pull": ("dockyard_cli.distribution:pull",
             "Pull an image from a registry, for this node's platform, like `docker pull`."),
    "push": ("dockyard_cli.distribution:push",
             "Push an image to a registry, like `docker push` (with TARGET, under that "
             "name)."),
    "save": ("dockyard_cli.distribution:save",
             "Save images to an OCI image-layout tar, like `docker save`."),
    "login": ("dockyard_cli.distribution:login",
              "Log in to a registry; the credentials go to Docker's config.json."),
    "volume": ("dockyard_cli.volumes:volume",
               "Manage volumes: data that outlives containers, mounted with -v NAME:/path."),
    "agent": ("dockyard_cli.agent:command",
              "Run the node agent: this node's part of a Dockyard cluster."),
    "shim": ("dockyard_cli.shim:command",
             "Run the node daemon: the container runtime behind a local API."),
    "up": ("dockyard_cli.up:up",
           "Run the Containers of manifests on this machine, like `kubectl apply` with no "
           "cluster."),
    "down": ("dockyard_cli.up:down",
             "Remove the containers of manifests from this machine: undo `dockyard up`."),
    "validate": ("dockyard_cli.validate:command",
                 "Check Dockyard manifests in PATHS (files or directories) before you apply them."),
    "explain": ("dockyard_cli.explain:command",
                "Show the documentation of a kind or one of its fields."),
    "crd": ("dockyard_cli.crd:group",
            "The CustomResourceDefinitions generated from the API models."),
    "stages": ("dockyard_cli.stages:command",
               "Show the delivery pipeline: each stage, what runs in it, and what waits to "
               "enter."),
    "promote": ("dockyard_cli.promote:promote",
                "Move verified image digests into a stage; follow, approve and list "
                "promotions."),
    "version": ("dockyard_cli.version:command",
                "Print the Dockyard version and the API version it serves."),
}
"""Command name -> (`module:attribute` of its click command, its short help). The short
help is the command's own (a test checks), here so that `dockyard --help` imports none."""


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DaemonError as e:
            raise _Reported(e) from e

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[cmd_name][0].partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        return command  # type: ignore[no-any-return]


@click.group("dockyard", cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Least severe log level to print.")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto",
              show_default=True,
              help="Log rendering: JSON lines, or readable lines; auto picks readable on a "
                   "terminal and JSON otherwise.")
def cli(log_level: str, log_format: str) -> None:
    """Dockyard: containers the Docker way, declared as Kubernetes resources.

    \b
    Run containers on this machine, like docker:
      dockyard import rootfs.tar busybox:latest   make an image from a root filesystem
      dockyard run --rm busybox echo hello        run a command in a new container
      dockyard ps -a                              list containers
    Work with the Kubernetes API:
      dockyard validate examples/        check manifests the way the API server will
      dockyard explain container.spec    read the documentation of any field
      dockyard crd generate              write the CRDs from the API models
    """
    configure_logging(level=log_level, fmt=log_format, lazy=True)  # type: ignore[arg-type]


class _Reported(click.ClickException):
    """A daemon's error as click reports errors: one line, and the CLI's exit code."""

    def __init__(self, error: DaemonError) -> None:
        super().__init__(error.message)
        self.exit_code = error.exit_code  # type: ignore[misc]  # per error, as Docker's
