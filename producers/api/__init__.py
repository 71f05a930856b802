"""The HTTP job API: submit, inspect, list, cancel and watch jobs."""

from producers.api.app import Services, create_app

__all__ = ["Services", "create_app"]
