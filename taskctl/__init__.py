"""The ``taskctl`` command line and the process runner that sit above the four packages."""

__all__: list[str] = []
