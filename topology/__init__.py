"""The contract on the wire: topology file, compiled broker objects, envelope, routes, apply.

Import from the module that holds a name (``topology.envelope``, ``topology.settings``...):
the package itself loads nothing, so a command that needs one module pays for that one.
"""

__all__: list[str] = []
