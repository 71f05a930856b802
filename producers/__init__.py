"""Publishing jobs: the confirmed publisher, the HTTP job API, submission and claim checks."""

__all__: list[str] = []
