"""The schedule tests share the workflow tests' store on SQLite and PostgreSQL."""

from tests.workflows.conftest import sql_store

__all__ = ["sql_store"]
