"""The worker runtime: handlers, dispatch, retries, dead letters (built in a later issue)."""

__all__: list[str] = []
