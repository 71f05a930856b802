"""Job state shared by producers and workers: the job store (SQLite, PostgreSQL) and the blob store."""

__all__: list[str] = []
