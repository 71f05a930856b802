"""The job store: job records and submission idempotency keys (SQLite or PostgreSQL)."""
