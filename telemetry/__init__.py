"""Cross-cutting observability: JSON logs, secret redaction, tracing and metrics, used by every package."""

__all__: list[str] = []
