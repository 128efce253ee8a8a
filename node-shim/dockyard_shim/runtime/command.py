"""Docker's rules for what a container runs: ENTRYPOINT + CMD, environment, user, cwd."""

from __future__ import annotations

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.runtime import capabilities, seccomp
from dockyard_shim.runtime.config import ContainerConfig, seccomp_profile
from dockyard_shim.runtime.ports import RunnableImage
from dockyard_shim.runtime.process import ProcessSpec

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def process_spec(config: ContainerConfig, image: RunnableImage) -> ProcessSpec:
    """Docker's rules for what runs: ENTRYPOINT + CMD, each overridable; env merged."""
    entrypoint = image.entrypoint if config.entrypoint is None else config.entrypoint
    cmd = config.command or (image.cmd if config.entrypoint is None else ())
    args = (*entrypoint, *cmd)
    if not args:
        raise InvalidArgumentError(f"no command specified: the image {image.name} has no "
                                   "CMD or ENTRYPOINT; give one after the image name")
    env = dict(item.split("=", 1) for item in (DEFAULT_PATH, *image.env, *config.env))
    caps = capabilities.resolve(config.cap_add, config.cap_drop, capabilities.last_cap(),
                                capabilities.held())
    profile = seccomp_profile(config)
    return ProcessSpec(
        args=args, env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=config.working_dir or image.working_dir or "/",
        user=config.user or image.user, capabilities=caps,
        no_new_privileges=config.no_new_privileges,
        # Compiled here, in the daemon, for the container's capabilities (Docker's profile
        # opens some syscalls only to a container holding the capability that guards them).
        seccomp=b"" if profile is None else seccomp.compile_profile(profile, caps))
