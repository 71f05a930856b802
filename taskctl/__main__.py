"""``python -m taskctl``: the command line, as ``taskctl up`` starts its own processes."""

from taskctl.cli import main

main()
