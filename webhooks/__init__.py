"""Inbound webhook receivers and outbound callbacks (built in a later issue)."""

__all__: list[str] = []
