"""The node daemon (`dockyard shim`): the runtime behind a local HTTP API on a unix socket."""
