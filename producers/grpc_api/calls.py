"""gRPC's protocol over HTTP/2 as an ASGI application: each call routed to its servicer method, framed, timed and ended with a status."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias
from urllib.parse import quote

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from loguru import logger

Code = grpc.StatusCode
Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]
Scope: TypeAlias = dict[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[dict[str, Any]]]
Send: TypeAlias = Callable[[dict[str, Any]], Awaitable[None]]

_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# Headers of the protocol itself, never a call's metadata.
_RESERVED = frozenset({b"content-type", b"te", b"grpc-timeout", b"grpc-encoding"})
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/grpc"), (b"grpc-accept-encoding", b"identity")],
    "trailers": True,
}
_END = {"type": "http.response.body", "body": b""}
_OK = {"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]}
# grpc-message is percent-encoded: printable ASCII but "%" stays as it is.
_PLAIN = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)


# Not a TaskqError: it never leaves a call. It is how a method ends its call with a status,
# as grpc.aio's abort raises, and the layer answers it; taskq's errors become it in service.py.
class CallEnded(Exception):
    """A call ended by its method with a status code, details and trailing metadata."""

    def __init__(self, code: Code, details: str = "", trailers: Metadata = ()) -> None:
        super().__init__(details)
        self.code, self.details, self.trailers = code, details, trailers


class Context:
    """What a servicer method sees of its call: the metadata, the time left, a way to end it or write to it."""

    __slots__ = ("_deadline", "_metadata", "_send", "_started")

    def __init__(self, metadata: Metadata, deadline: float | None, send: Send) -> None:
        self._metadata, self._deadline, self._send = metadata, deadline, send
        self._started = False

    def invocation_metadata(self) -> Metadata:
        """Return the call's metadata, as the client sent it (``-bin`` values decoded)."""
        return self._metadata

    def time_remaining(self) -> float | None:
        """Return the seconds left before the call's deadline, or ``None`` when it has none."""
        if self._deadline is None:
            return None
        return self._deadline - asyncio.get_running_loop().time()

    async def abort(
        self, code: Code, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        """End the call with ``code``; the method stops here."""
        raise CallEnded(code, details, trailing_metadata)

    async def write(self, message: Message) -> None:
        """Send one message of a server-streaming call."""
        if not self._started:
            self._started = True
            await self._send(_START)
        await self._send(
            {"type": "http.response.body", "body": _framed(message), "more_body": True}
        )


@dataclass(frozen=True, slots=True)
class _Method:
    call: Callable[..., Any]
    request: type[Message]
    streams_in: bool
    streams_out: bool


class GrpcApp:
    """An ASGI application serving the methods of the servicers added, at ``/<service>/<method>``."""

    def __init__(self, max_message_bytes: int) -> None:
        self._methods: dict[str, _Method] = {}
        self._limit = max_message_bytes

    def add(self, service: ServiceDescriptor, servicer: object) -> None:
        """Serve each method of ``service`` that the servicer has (the others: UNIMPLEMENTED)."""
        for method in service.methods:
            call = getattr(servicer, method.name, None)
            if call is not None:
                self._methods[f"/{service.full_name}/{method.name}"] = _Method(
                    call,
                    GetMessageClass(method.input_type),
                    method.client_streaming,
                    method.server_streaming,
                )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one call (other ASGI scopes are not served)."""
        if scope["type"] != "http":
            return
        content_type, metadata, deadline, problem = _read_headers(scope["headers"])
        if scope["method"] != "POST" or not content_type.startswith(b"application/grpc"):
            # Not a gRPC call at all: an HTTP answer, as the protocol asks.
            await send({"type": "http.response.start", "status": 415, "headers": []})
            await send({"type": "http.response.body", "body": b"gRPC calls only"})
            return
        method = self._methods.get(scope["path"])
        context = Context(metadata, deadline, send)
        try:
            if problem is not None or method is None:
                raise problem or CallEnded(Code.UNIMPLEMENTED, f"no method {scope['path']}")
            await self._answer(method, context, receive, send)
        except CallEnded as ended:
            await _end(context, send, ended.code, ended.details, ended.trailers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.opt(exception=exc).error("gRPC call {} failed unexpectedly", scope["path"])
            await _end(context, send, Code.UNKNOWN, "unexpected error")

    async def _answer(
        self, method: _Method, context: Context, receive: Receive, send: Send
    ) -> None:
        """Run ``method`` within the call's deadline, if it has one."""
        if context._deadline is None:
            await self._run(method, context, receive, send)
            return
        try:
            async with asyncio.timeout_at(context._deadline) as timer:
                await self._run(method, context, receive, send)
        except TimeoutError:
            if timer.expired():
                raise CallEnded(Code.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            raise

    async def _run(self, method: _Method, context: Context, receive: Receive, send: Send) -> None:
        """Run ``method`` and send what it answers."""
        if not method.streams_out:
            request = _one(await _body(receive, self._limit), method.request, self._limit)
            reply = _framed(await method.call(request, context))
            context._started = True
            await send(_START)
            await send({"type": "http.response.body", "body": reply})
            await send(_OK)
            return
        if method.streams_in:
            answer = method.call(_messages(receive, method.request, self._limit), context)
        else:
            request = _one(await _body(receive, self._limit), method.request, self._limit)
            answer = method.call(request, context)
        await _stream(answer, context, receive, watch=not method.streams_in)
        if not context._started:
            context._started = True
            await send(_START)
        await send(_END)
        await send(_OK)


async def _stream(answer: Any, context: Context, receive: Receive, *, watch: bool) -> None:
    """Send each message a server-streaming method yields (or writes) until it ends; ``watch``: end it when the client leaves."""

    async def run() -> None:
        if hasattr(answer, "__aiter__"):
            async for message in answer:
                await context.write(message)
        else:
            await answer

    if not watch:  # the request stream reads receive(), and ends the call when the client leaves
        await run()
        return
    task = asyncio.ensure_future(run())

    async def left() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(left())
    try:
        await task
    except asyncio.CancelledError:
        if not watcher.done():
            raise
        raise CallEnded(Code.CANCELLED, "the client left") from None
    finally:
        watcher.cancel()


async def _body(receive: Receive, limit: int) -> bytes:
    """Return the whole request body of a unary call: one framed message, at most ``limit`` bytes."""
    body = b""
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise CallEnded(Code.CANCELLED, "the client left")
        chunk: bytes = event.get("body", b"")
        body += chunk
        if len(body) > limit + 5:
            raise CallEnded(Code.RESOURCE_EXHAUSTED, f"a message is at most {limit} bytes")
        if not event.get("more_body", False):
            return body


def _one(body: bytes, kind: type[Message], limit: int) -> Any:
    """Return the one message a unary call's body holds."""
    size = _size(body, limit)
    if size is None or len(body) != 5 + size:
        raise CallEnded(Code.INTERNAL, "a unary call carries one whole message")
    return _parsed(kind, body[5:])


def _size(buffer: bytes, limit: int) -> int | None:
    """Return the length of the message framed at the start of ``buffer`` (``None``: not all there yet)."""
    if len(buffer) < 5:
        return None
    if buffer[0]:
        raise CallEnded(Code.UNIMPLEMENTED, "compressed messages are not accepted")
    size = int.from_bytes(buffer[1:5], "big")
    if size > limit:
        raise CallEnded(Code.RESOURCE_EXHAUSTED, f"a message is at most {limit} bytes, got {size}")
    return size


def _parsed(kind: type[Message], payload: bytes) -> Any:
    try:
        return kind.FromString(payload)
    except DecodeError as exc:
        raise CallEnded(Code.INTERNAL, f"the message cannot be parsed: {exc}") from None


async def _messages(receive: Receive, kind: type[Message], limit: int) -> AsyncIterator[Any]:
    """Yield the messages of a client-streaming call, each parsed, until the client ends its stream."""
    buffer = b""
    more = True
    while more:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise CallEnded(Code.CANCELLED, "the client left")
        buffer += event.get("body", b"")
        more = event.get("more_body", False)
        while (size := _size(buffer, limit)) is not None and len(buffer) >= 5 + size:
            yield _parsed(kind, buffer[5 : 5 + size])
            buffer = buffer[5 + size :]
    if buffer:
        raise CallEnded(Code.INTERNAL, "the request ended inside a message")


def _read_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[bytes, Metadata, float | None, CallEnded | None]:
    """Return a call's content type, metadata, deadline (the loop's clock) and what is wrong with it."""
    content_type = b""
    metadata: list[tuple[str, str | bytes]] = []
    deadline = None
    problem = None
    for name, value in headers:
        if name in _RESERVED:
            if name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = _timeout(value)
                if timeout is None:
                    problem = CallEnded(Code.INTERNAL, f"grpc-timeout {value!r} is not a timeout")
                else:
                    deadline = asyncio.get_running_loop().time() + timeout
            elif name == b"grpc-encoding" and value != b"identity":
                problem = CallEnded(
                    Code.UNIMPLEMENTED, f"grpc-encoding {value.decode()!r} is not accepted"
                )
        elif name.endswith(b"-bin"):
            try:
                metadata.append((name.decode(), base64.b64decode(value + b"==")))
            except ValueError:
                problem = CallEnded(Code.INTERNAL, f"metadata {name.decode()!r} is not base64")
        else:
            metadata.append((name.decode(), value.decode("latin-1")))
    return content_type, tuple(metadata), deadline, problem


def _timeout(value: bytes) -> float | None:
    """Return the seconds a ``grpc-timeout`` value gives (at most 8 digits and a unit), or ``None``."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def _framed(message: Message) -> bytes:
    payload: bytes = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


async def _end(
    context: Context, send: Send, code: Code, details: str, trailers: Metadata = ()
) -> None:
    """End the call with a status: the response head first if nothing was sent yet."""
    if not context._started:
        context._started = True
        await send(_START)
    status = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        status.append((b"grpc-message", quote(details, safe=_PLAIN).encode()))
    for name, value in trailers:
        raw = value if isinstance(value, bytes) else value.encode()
        if name.endswith("-bin"):
            raw = base64.b64encode(raw).rstrip(b"=")
        status.append((name.encode(), raw))
    await send(_END)
    await send({"type": "http.response.trailers", "headers": status})
