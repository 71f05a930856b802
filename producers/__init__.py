"""Publishing jobs: the confirmed publisher, the HTTP job API, submission and claim checks.

Import from the module that holds a name (``producers.publisher``, ``producers.client``...):
the package itself loads nothing, so a command that needs one module pays for that one.
"""

__all__: list[str] = []
