"""`python -m dockyard_cli`: the same as the `dockyard` command."""

from dockyard_cli.main import main

main()
