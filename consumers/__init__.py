"""The worker runtime: handlers, dispatch, retries, breakers, dead letters and the autoscaler."""

__all__: list[str] = []
