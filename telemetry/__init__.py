"""Cross-cutting observability: JSON logs, secret redaction and tracing, used by every package."""

__all__: list[str] = []
