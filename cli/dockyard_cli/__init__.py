"""The `dockyard` command line: a thin layer over the API, the node shim and the operator.

Commands parse arguments, call into the packages below and render results; they hold no
logic of their own that a test would need to reach through the CLI.
"""
