"""gRPC's protocol as taskq serves it (uvicorn's HTTP/2): real grpcio clients and a raw HTTP/2 client over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import zttp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from producers.grpc_api.calls import Context, GrpcApp
from producers.grpc_api.server import RESET_BUDGET, STREAM_BUDGET, serve_calls, stop_calls
from producers.grpc_api.v1 import jobs_pb2 as pb
from producers.grpc_api.v1 import jobs_pb2_grpc
from tests.tlsbroker import make_certificates
from topology.settings import ApiSettings
from topology.tls import api_context

Code = grpc.StatusCode
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
JOBS = pb.DESCRIPTOR.services_by_name["Jobs"]
SERVING = health_pb2.HealthCheckResponse.SERVING


class Jobs:
    """Methods that end calls each way a servicer can."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.watch_ended = asyncio.Event()

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.Job:
        if request.id == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.id == "abort":
            trailers = (("retry-after", "3"), ("detail-bin", b"\x00\xffraw"))
            await context.abort(Code.NOT_FOUND, "no job «abort» at 100%", trailers)
        if request.id == "crash":
            raise RuntimeError("a bug")
        metadata = dict(context.invocation_metadata())
        return pb.Job(id=request.id, type=str(metadata.get("x-who", "")))

    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.JobEvent]:
        try:
            yield pb.JobEvent(id="first")
            await asyncio.sleep(30)
        finally:
            self.watch_ended.set()


class Health:
    """Answers SERVING at once, and streams statuses until the client leaves."""

    async def Check(self, request: Any, context: Context) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=SERVING)

    async def Watch(self, request: Any, context: Context) -> None:
        await context.write(health_pb2.HealthCheckResponse(status=SERVING))
        await asyncio.sleep(30)


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, Jobs]]:
    app = GrpcApp(max_message_bytes=1024)
    jobs = Jobs()
    app.add(JOBS, jobs)
    app.add(HEALTH, Health())
    server, port = await serve_calls(app, "127.0.0.1", 0)
    try:
        yield port, jobs
    finally:
        await stop_calls(server, 1)


@pytest.fixture
async def stub(served: tuple[int, Jobs]) -> AsyncIterator[jobs_pb2_grpc.JobsStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        yield jobs_pb2_grpc.JobsStub(channel)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_one_channel_outlives_the_servers_stream_budget_without_a_failed_call(
    served: tuple[int, Jobs],
) -> None:
    # zttp ends a connection after 4,096 streams with a fatal GOAWAY that fails the calls in
    # flight; the server retires each connection before that, and the client moves on.
    port, _ = served
    calls = 2 * STREAM_BUDGET + 500
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        left = iter(range(calls))

        async def caller() -> None:
            for _ in left:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    outcome = "OK" if reply.status == SERVING else "wrong"
                except grpc.aio.AioRpcError as exc:
                    outcome = f"{exc.code().name}: {exc.details()}"
                codes[outcome] = codes.get(outcome, 0) + 1

        await asyncio.gather(*(caller() for _ in range(32)))
    assert codes == {"OK": calls}


async def test_cancelled_calls_past_the_reset_budget_fail_no_other_call(
    served: tuple[int, Jobs],
) -> None:
    # zttp also ends a connection whose client reset 256 streams (a cancelled call is one),
    # failing the calls in flight beside them; the server retires the connection first.
    port, _ = served
    codes: dict[str, int] = {}
    cancelling = True
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def checker() -> None:
            while cancelling:
                try:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    outcome = "OK"
                except grpc.aio.AioRpcError as exc:
                    outcome = f"{exc.code().name}: {exc.details()}"
                codes[outcome] = codes.get(outcome, 0) + 1

        checkers = asyncio.gather(*(checker() for _ in range(8)))
        for _ in range(2 * RESET_BUDGET + 300):
            watch = health.Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == SERVING
            watch.cancel()
        cancelling = False
        await checkers
    assert set(codes) == {"OK"}


async def test_a_deadline_ends_the_call_and_cancels_its_method(
    served: tuple[int, Jobs], stub: jobs_pb2_grpc.JobsStub
) -> None:
    error = await refused(stub.Get(pb.GetRequest(id="slow"), timeout=0.3))
    assert error.code() is Code.DEADLINE_EXCEEDED
    await asyncio.wait_for(served[1].cancelled.wait(), 5)


async def test_an_abort_carries_its_code_details_and_trailing_metadata(
    stub: jobs_pb2_grpc.JobsStub,
) -> None:
    error = await refused(stub.Get(pb.GetRequest(id="abort")))
    assert error.code() is Code.NOT_FOUND
    assert error.details() == "no job «abort» at 100%"
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["retry-after"] == "3"
    assert trailers["detail-bin"] == b"\x00\xffraw"
    # The metadata sent reaches the method; a good call on the same channel still works.
    reply = await stub.Get(pb.GetRequest(id="j1"), metadata=(("x-who", "me"),))
    assert (reply.id, reply.type) == ("j1", "me")


async def test_a_method_that_raises_answers_unknown_and_hides_why(
    stub: jobs_pb2_grpc.JobsStub,
) -> None:
    error = await refused(stub.Get(pb.GetRequest(id="crash")))
    assert error.code() is Code.UNKNOWN
    assert error.details() == "unexpected error"


async def test_calls_the_server_cannot_take_get_standard_codes(served: tuple[int, Jobs]) -> None:
    port, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jobs_pb2_grpc.JobsStub(channel)
        # A method the servicer lacks, and a service nobody serves.
        assert (await refused(stub.Cancel(pb.CancelRequest(id="x")))).code() is Code.UNIMPLEMENTED
        nobody = channel.unary_unary("/nope.v1.Nobody/Call")
        assert (await refused(nobody(b""))).code() is Code.UNIMPLEMENTED
        # Compressed calls are not accepted; the client learns it by name.
        gzipped = await refused(stub.Get(pb.GetRequest(id="j"), compression=grpc.Compression.Gzip))
        assert gzipped.code() is Code.UNIMPLEMENTED
        assert "gzip" in (gzipped.details() or "")
        # A message over the server's limit (1,024 bytes here).
        assert (
            await refused(stub.Get(pb.GetRequest(id="x" * 2000)))
        ).code() is Code.RESOURCE_EXHAUSTED
        # Bytes that are no message of the method's type.
        raw = channel.unary_unary("/taskq.v1.Jobs/Get")
        assert (await refused(raw(b"\xff\xff\xff"))).code() is Code.INTERNAL


async def test_a_watch_ends_when_its_client_leaves(served: tuple[int, Jobs]) -> None:
    port, jobs = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jobs_pb2_grpc.JobsStub(channel)
        watch = stub.Watch(pb.WatchRequest(job_id="j"))
        assert (await watch.read()).id == "first"
        watch.cancel()
        await asyncio.wait_for(jobs.watch_ended.wait(), 5)


async def raw_call(port: int, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    """Make one HTTP/2 request with zttp's client; return its status, headers and trailers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = zttp.Connection(zttp.CLIENT, zttp.HTTP2)
    conn.initiate_connection()
    stream = conn.send_request(b"POST", b"/taskq.v1.Jobs/Get", b"HTTP/2", headers)
    stream.send_data(body)
    stream.end_message()
    writer.write(conn.data_to_send())
    answer: dict[str, Any] = {"trailers": {}}
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "the server closed the connection"
            conn.receive_data(data)
            while (event := conn.next_event()) is not zttp.NEED_DATA:
                if isinstance(event, zttp.Response):
                    answer["status"] = event.status_code
                    answer["headers"] = dict(event.headers)
                elif isinstance(event, zttp.EndOfMessage):
                    answer["trailers"] = dict(event.trailers)
                    return answer
            writer.write(conn.data_to_send())
    finally:
        writer.close()
        await writer.wait_closed()


async def test_requests_that_are_not_good_grpc_calls_are_answered_plainly(
    served: tuple[int, Jobs],
) -> None:
    port, _ = served
    message = pb.GetRequest(id="j").SerializeToString()
    framed = b"\x00" + len(message).to_bytes(4, "big") + message
    base = [(b"host", b"127.0.0.1"), (b"te", b"trailers")]
    # Not gRPC at all: HTTP 415, as the protocol asks.
    answer = await raw_call(port, [*base, (b"content-type", b"application/json")], b"{}")
    assert answer["status"] == 415
    # A timeout that is no timeout, and a compressed message without an encoding.
    grpc_type = (b"content-type", b"application/grpc")
    answer = await raw_call(port, [*base, grpc_type, (b"grpc-timeout", b"soon")], framed)
    assert answer["trailers"][b"grpc-status"] == str(Code.INTERNAL.value[0]).encode()
    assert b"grpc-timeout" in answer["trailers"][b"grpc-message"]
    answer = await raw_call(port, [*base, grpc_type], b"\x01" + framed[1:])
    assert answer["trailers"][b"grpc-status"] == str(Code.UNIMPLEMENTED.value[0]).encode()
    # Half a message.
    answer = await raw_call(port, [*base, grpc_type], framed[:-2])
    assert answer["trailers"][b"grpc-status"] == str(Code.INTERNAL.value[0]).encode()
    # And the good call, for contrast: OK with the answer's one message.
    answer = await raw_call(port, [*base, grpc_type, (b"grpc-timeout", b"5S")], framed)
    assert answer["status"] == 200
    assert answer["trailers"][b"grpc-status"] == b"0"


async def test_tls_serves_http2_and_wants_client_certificates_with_a_client_ca(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path)
    settings = ApiSettings(
        api_tls_cert_file=str(certs.server),
        api_tls_key_file=str(certs.server_key),
        api_tls_client_ca_file=str(certs.ca),
    )
    app = GrpcApp(max_message_bytes=1024)
    app.add(HEALTH, Health())
    server, port = await serve_calls(app, "127.0.0.1", 0, api_context(settings))
    ca = certs.ca.read_bytes()
    try:
        shown = grpc.ssl_channel_credentials(
            ca, certs.client_key.read_bytes(), certs.client.read_bytes()
        )
        async with grpc.aio.secure_channel(f"localhost:{port}", shown) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == SERVING
        for credentials in (grpc.ssl_channel_credentials(ca), None):  # no client certificate; plain
            target = f"localhost:{port}"
            async with (
                grpc.aio.secure_channel(target, credentials)
                if credentials
                else grpc.aio.insecure_channel(target)
            ) as channel:
                check = health_pb2_grpc.HealthStub(channel).Check
                error = await refused(check(health_pb2.HealthCheckRequest(), timeout=3))
                assert error.code() is Code.UNAVAILABLE
    finally:
        await stop_calls(server, 1)
