"""How a job listing becomes SQL, the same for every SQL store: filters, order, one page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobstore.model import JobPage, JobRecord, JobStatus


@dataclass(frozen=True, slots=True)
class ListingQuery:
    """The WHERE clause and parameters of a listing, fetching one row past the page."""

    where: str
    params: list[str | int]
    limit: int

    @classmethod
    def build(
        cls,
        *,
        tenant: str | None = None,
        status: JobStatus | None,
        job_type: str | None,
        cursor: str | None,
        limit: int,
        placeholder: Callable[[int], str],
    ) -> ListingQuery:
        """Return the query; ``placeholder(n)`` spells the n-th parameter (``?`` or ``$n``)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        # Only the filters given reach the SQL, so every variant is a plain index range scan.
        conditions = [
            ("tenant = ", tenant),
            ("status = ", status),
            ("type = ", job_type),
            ("id < ", cursor),
        ]
        chosen = [(sql, value) for sql, value in conditions if value is not None]
        tests = [f"{sql}{placeholder(i)}" for i, (sql, _) in enumerate(chosen, start=1)]
        where = f" WHERE {' AND '.join(tests)}" if tests else ""
        # str() turns a JobStatus into its value; one row more tells whether a page follows.
        params: list[str | int] = [str(value) for _, value in chosen]
        return cls(
            f"{where} ORDER BY id DESC LIMIT {placeholder(len(params) + 1)}",
            [*params, limit + 1],
            limit,
        )

    def page(self, records: Sequence[JobRecord]) -> JobPage:
        """Return the page from the fetched records: one past the limit means more follow."""
        jobs = list(records[: self.limit])
        return JobPage(jobs, jobs[-1].id if len(records) > self.limit else None)
