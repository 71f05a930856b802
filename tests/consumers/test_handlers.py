import asyncio
import threading
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from consumers.handlers import HandlerRegistry, JobContext, Permanent, Retry
from topology.errors import ContractError


class Email(BaseModel):
    to: str
    subject: str = "hello"


def context(**changes) -> JobContext:
    fields = dict(
        job_id="j1",
        job_type="email",
        attempt=1,
        max_attempts=3,
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        idempotency_key="j1",
    )
    return JobContext(**(fields | changes))


def test_typed_payload_is_validated_and_the_result_returned():
    tasks = HandlerRegistry()

    @tasks.handler("email")
    async def send(payload: Email, ctx: JobContext) -> dict:
        return {"sent_to": payload.to, "attempt": ctx.attempt}

    found = tasks.resolve("email")
    assert found is not None
    assert found.is_async
    parsed = found.parse({"to": "a@example.com"})
    assert parsed == Email(to="a@example.com")
    assert asyncio.run(found.call(parsed, context())) == {"sent_to": "a@example.com", "attempt": 1}


def test_a_payload_that_does_not_fit_is_a_contract_error():
    tasks = HandlerRegistry()

    @tasks.handler("email")
    async def send(payload: Email, ctx: JobContext) -> None: ...

    with pytest.raises(ContractError, match="does not fit the 'email' handler"):
        tasks.resolve("email").parse({"subject": "no recipient"})


def test_sync_handlers_run_in_a_thread():
    tasks = HandlerRegistry()
    seen = {}

    @tasks.handler("report.*")
    def build(payload: dict, ctx: JobContext) -> str:
        seen["thread"] = threading.current_thread() is threading.main_thread()
        return "ok"

    found = tasks.resolve("report.daily")
    assert not found.is_async
    assert asyncio.run(found.call({}, context())) == "ok"
    assert seen["thread"] is False


def test_exact_types_win_over_patterns_and_unknown_types_resolve_to_none():
    tasks = HandlerRegistry()

    @tasks.handler("email.#")
    async def anything(payload, ctx): ...

    @tasks.handler("email.welcome")
    async def welcome(payload, ctx): ...

    assert tasks.resolve("email.welcome").fn is welcome
    assert tasks.resolve("email.reset").fn is anything
    assert tasks.resolve("sms") is None
    assert tasks.job_types == ("email.welcome", "email.#")


def test_registration_mistakes_fail_at_import_time():
    tasks = HandlerRegistry()

    @tasks.handler("email")
    async def first(payload, ctx): ...

    with pytest.raises(ValueError, match="registered already"):

        @tasks.handler("email")
        async def second(payload, ctx): ...

    with pytest.raises(ValueError, match="must take \\(payload, context\\)"):

        @tasks.handler("sms")
        async def wrong(payload): ...


def test_control_signals_carry_what_the_dispatcher_needs():
    assert Retry("later", delay=30).delay == 30
    assert Retry().delay is None
    assert str(Permanent("bad address")) == "bad address"


def test_context_binds_a_logger_to_the_job():
    ctx = context()
    assert ctx.logger is not None
    assert context() == context()  # the logger is not part of equality
