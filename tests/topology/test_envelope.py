import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology import names
from topology.envelope import Envelope, PayloadRef, decode, new_job_id
from topology.errors import ContractError
from topology.spec import Priority

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
job_types = st.lists(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=4).map(
    ".".join
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(
    job_type=job_types,
    payload=json_values,
    priority=st.sampled_from(Priority),
    attempt=st.integers(1, 1000),
    # AMQP short strings: 63 characters are at most 252 bytes; no control characters.
    key=st.none()
    | st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cf")), min_size=1, max_size=63
    ),
    created=moments,
    delay=st.none() | st.integers(0, 10**9),
)
def test_decode_of_encode_is_identity_for_any_envelope(
    job_type, payload, priority, attempt, key, created, delay
):
    envelope = Envelope.new(
        job_type,
        payload,
        priority=priority,
        attempt=attempt,
        idempotency_key=key,
        created_at=created,
        not_before=None if delay is None else created + timedelta(milliseconds=delay),
    )
    assert decode(envelope.encode()) == envelope


def decode_outcome(body: bytes) -> Envelope | ContractError:
    try:
        return decode(body)
    except ContractError as exc:
        return exc


@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_raises_only_contract_error(body: bytes):
    assert isinstance(decode_outcome(body), Envelope | ContractError)


@given(st.data())
def test_decode_of_a_mangled_envelope_raises_only_contract_error(data):
    body = bytearray(Envelope.new("email", {"to": "a@b.c"}).encode())
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] = data.draw(st.integers(0, 255))
    assert isinstance(decode_outcome(bytes(body)), Envelope | ContractError)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "JSON list, not an envelope"),
        (b'{"v": 2}', "version 2 is not supported"),
        (b'{"v": 1}', "id: Field required"),
        (b"[" * 2000 + b"]" * 2000, "not JSON"),
    ],
)
def test_decode_explains_what_is_wrong(body: bytes, expected: str):
    with pytest.raises(ContractError) as info:
        decode(body)
    assert expected in str(info.value)


def test_unknown_envelope_fields_are_refused():
    data = orjson.loads(Envelope.new("email").encode())
    data["surprise"] = 1
    with pytest.raises(ContractError, match="surprise"):
        decode(orjson.dumps(data))


def test_payload_and_payload_ref_are_exclusive():
    ref = PayloadRef(uri="file:///x", sha256="0" * 64, size=3)
    assert Envelope.new("email", None, payload_ref=ref).payload_ref == ref
    with pytest.raises(ContractError, match="one of payload, payload_ref and payload_enc"):
        Envelope.new("email", {"a": 1}, payload_ref=ref)


def test_new_refuses_bad_fields_with_the_field_name():
    with pytest.raises(ContractError, match="type"):
        Envelope.new("bad type")
    with pytest.raises(ContractError, match="time zone"):
        Envelope.new("email", created_at=datetime(2026, 1, 1))


def test_amqp_properties_carry_identity_priority_and_our_attempt_header():
    envelope = Envelope.new(
        "email", {"a": 1}, priority=Priority.URGENT, attempt=3, correlation_id="c"
    )
    props = envelope.properties()
    assert props.message_id == envelope.id
    assert props.type == "email"
    assert props.priority == 3
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.correlation_id == "c"
    assert props.timestamp == envelope.created_at
    assert props.headers == {names.ATTEMPT_HEADER: 3}


def test_job_ids_are_uuid7_and_sort_by_creation_time():
    ids = [new_job_id() for _ in range(5000)]  # many share a millisecond
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert sorted(ids) == ids
    assert len(set(ids)) == 5000
    first = new_job_id()
    time.sleep(0.002)
    later = new_job_id()
    assert first < later


def test_priorities_map_to_four_amqp_levels():
    assert [p.level for p in Priority] == [0, 1, 2, 3]
