"""Sealing payloads: AES-256-GCM tokens bound to the job id, keys by id, settings that refuse bad keys."""

import base64

import pytest

from topology.errors import ContractError, SettingsError
from topology.sealing import SEALED, Sealer, new_key, token_of
from topology.settings import EncryptionSettings, load_settings, read_section

OLD, NEW = base64.b64decode(new_key()), base64.b64decode(new_key())


def test_a_sealed_payload_opens_for_its_job_only():
    sealer = Sealer([("k1", OLD)])
    token = sealer.seal("job-1", b'{"card":"4111"}')
    assert token.startswith("k1:")
    assert "4111" not in token
    assert sealer.open("job-1", token) == b'{"card":"4111"}'
    with pytest.raises(ContractError, match="job-2 does not open under data key 'k1'"):
        sealer.open("job-2", token)
    with pytest.raises(ContractError, match="result of job job-1 does not open"):
        sealer.open("job-1", token, "result")  # a payload never passes for a result


@pytest.mark.parametrize("index", [3, 10, 30, -1])
def test_one_altered_byte_is_a_contract_error(index: int):
    sealer = Sealer([("k1", OLD)])
    key_id, _, text = sealer.seal("job-1", b"x" * 40).partition(":")
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    with pytest.raises(ContractError, match="altered"):
        sealer.open("job-1", f"{key_id}:{base64.b64encode(bytes(raw)).decode()}")


def test_rotation_seals_with_the_first_key_and_opens_with_every_listed_one():
    before = Sealer([("k1", OLD)]).seal("job-1", b"old")
    rotated = Sealer([("k2", NEW), ("k1", OLD)])
    assert rotated.current == "k2"
    assert rotated.open("job-1", before) == b"old"
    assert rotated.seal("job-1", b"new").startswith("k2:")
    with pytest.raises(ContractError, match=r"sealed under data key 'k1'.*keys: k2"):
        Sealer([("k2", NEW)]).open("job-1", before)
    with pytest.raises(ContractError, match="TASKQ_DATA_KEYS is not set"):
        Sealer().open("job-1", before)


def test_the_stored_form_is_recognised_and_clear_values_are_not():
    value = Sealer([("k1", OLD)]).seal_value("job-1", b"1")
    assert token_of(value) == value[SEALED]
    for clear in ({"a": 1}, {SEALED: 1}, {SEALED: "x", "b": 2}, "k1:abc", None, [1]):
        assert token_of(clear) is None


def test_keys_come_from_the_environment_or_a_file(tmp_path):
    text = f"k2:{base64.b64encode(NEW).decode()},k1:{base64.b64encode(OLD).decode()}"
    assert read_section(EncryptionSettings, {}).sealer().enabled is False
    from_env = read_section(EncryptionSettings, {"TASKQ_DATA_KEYS": text}).sealer()
    assert from_env.current == "k2"
    assert from_env.open("j", Sealer([("k1", OLD)]).seal("j", b"old")) == b"old"
    path = tmp_path / "keys"
    path.write_text("# current first\n" + text.replace(",", "\n") + "\n")
    from_file = read_section(EncryptionSettings, {"TASKQ_DATA_KEYS_FILE": str(path)}).sealer()
    assert from_file.open("j", from_env.seal("j", b"same")) == b"same"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("k1", "each entry is id:base64key"),
        ("k1:" + base64.b64encode(b"short").decode(), "32-byte key"),
        ("bad id:" + base64.b64encode(OLD).decode(), "id of letters"),
        (f"k1:{base64.b64encode(OLD).decode()},k1:{base64.b64encode(NEW).decode()}", "twice"),
    ],
)
def test_a_bad_key_is_refused_naming_the_variable_and_never_showing_it(value: str, problem: str):
    with pytest.raises(SettingsError, match=problem) as caught:
        load_settings({"TASKQ_DATA_KEYS": value}).encryption.sealer()
    assert base64.b64encode(OLD).decode() not in str(caught.value)


def test_a_missing_key_file_and_two_sources_are_refused(tmp_path):
    with pytest.raises(SettingsError, match="TASKQ_DATA_KEYS_FILE: cannot read"):
        read_section(EncryptionSettings, {"TASKQ_DATA_KEYS_FILE": str(tmp_path / "no")}).sealer()
    with pytest.raises(SettingsError, match="not both"):
        read_section(
            EncryptionSettings,
            {"TASKQ_DATA_KEYS": f"k1:{new_key()}", "TASKQ_DATA_KEYS_FILE": str(tmp_path / "k")},
        )
