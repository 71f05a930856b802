"""Inbound webhook receivers and outbound callbacks."""

__all__: list[str] = []
