"""The contract on the wire: topology file, compiled broker objects, envelope, routes, apply."""

__all__: list[str] = []
