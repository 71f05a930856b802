import asyncio
import re
from typing import Any

import aiormq
import pytest
from aiormq.connection import TransportFactory
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from yarl import URL

from telemetry.redaction import mask_url
from topology.broker import Failover, connect, connection_lost
from topology.errors import ManagementApiError, SettingsError
from topology.management import ManagementClient
from topology.settings import (
    BrokerSettings,
    PublisherSettings,
    Settings,
    load_settings,
    read_section,
)


def test_defaults_point_at_the_local_broker():
    settings = load_settings({}).broker
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@localhost:5672/"
    assert settings.vhost == "/"
    assert settings.management_base == "http://localhost:15672"
    assert settings.management_credentials == ("guest", "guest")


@pytest.mark.parametrize("section", list(Settings.model_fields))
def test_a_section_of_defaults_is_what_validating_no_values_gives(section: str):
    kind = Settings.model_fields[section].annotation
    assert read_section(kind, {}) == kind.model_validate({})


def test_env_values_are_read_with_the_taskq_prefix():
    settings = load_settings(
        {
            "TASKQ_AMQP_URL": "amqps://app:s3cret@mq.example:5671/prod%2Fjobs",
            "TASKQ_HEARTBEAT": "15",
            "OTHER": "x",
        }
    ).broker
    assert settings.heartbeat == 15
    assert settings.vhost == "prod/jobs"
    assert settings.management_base == "https://mq.example:15671"
    assert settings.management_credentials == ("app", "s3cret")


def test_management_url_overrides_host_and_credentials():
    settings = load_settings({"TASKQ_MANAGEMENT_URL": "http://admin:pw@mgmt:15672/"}).broker
    assert settings.management_base == "http://mgmt:15672"  # its credentials go in a header
    assert "pw" not in settings.describe()
    assert settings.management_credentials == ("admin", "pw")


def test_secrets_never_show_in_repr_or_description():
    settings = load_settings({"TASKQ_AMQP_URL": "amqp://app:hunter2@h/"}).broker
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.describe()
    assert mask_url("amqp://u:p@h:1/v") == "amqp://u:***@h:1/v"
    assert mask_url("amqp://h/") == "amqp://h/"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TASKQ_HEARTBEAT": "abc"}, "TASKQ_HEARTBEAT: Input should be a valid integer"),
        ({"TASKQ_HEARTBEAT": "-1"}, "TASKQ_HEARTBEAT: Input should be greater than or equal to 0"),
        ({"TASKQ_AMQP_URL": "http://u:secret@h/"}, "TASKQ_AMQP_URL: must start with amqp://"),
        ({"TASKQ_MANAGEMENT_URL": "ftp://h"}, "TASKQ_MANAGEMENT_URL: must start with http://"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], expected: str):
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert expected in str(info.value)
    assert "secret" not in str(info.value)


def test_with_vhost_quotes_the_name():
    settings = load_settings({}).broker.with_vhost("a/b")
    assert settings.amqp_url.get_secret_value().endswith("/a%2Fb")
    assert settings.vhost == "a/b"


@given(
    st.dictionaries(st.sampled_from(["TASKQ_CONFIRM_TIMEOUT", "TASKQ_PUBLISH_WINDOW"]), st.text())
)
def test_any_env_strings_give_settings_or_a_settings_error(env: dict[str, str]):
    try:
        outcome: PublisherSettings | SettingsError = load_settings(env).publisher
    except SettingsError as exc:
        outcome = exc
    if isinstance(outcome, SettingsError):
        assert str(outcome).startswith("invalid settings:\n  TASKQ_")
    else:
        assert outcome.confirm_timeout > 0
        assert outcome.publish_window >= 1


def test_failover_nodes_follow_the_url_node_with_the_scheme_default_port():
    settings = read_section(
        BrokerSettings,
        {
            "TASKQ_AMQP_URL": "amqps://u:p@mq1:5671/v",
            "TASKQ_AMQP_FAILOVER": "mq2:5681, mq3 ,[::1]:5682",
        },
    )
    assert settings.addresses == [("mq1", 5671), ("mq2", 5681), ("mq3", 5671), ("::1", 5682)]
    assert read_section(BrokerSettings, {}).addresses == [("localhost", 5672)]
    with pytest.raises(
        SettingsError, match="TASKQ_AMQP_FAILOVER: each entry is host or host:port, got 'mq2:x'"
    ):
        read_section(BrokerSettings, {"TASKQ_AMQP_FAILOVER": "mq2:x"})


async def test_a_connection_goes_to_the_first_node_that_answers(
    vhost: BrokerSettings,
):
    # Nothing listens on port 1 of loopback: that node refuses at once.
    settings = vhost.model_copy(
        update={
            "amqp_url": SecretStr(vhost.amqp_url.get_secret_value().replace(":5672/", ":1/")),
            "amqp_failover": "127.0.0.1:5672",
        }
    )
    connection = await connect(settings, name="failover test")
    try:
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)  # a working connection, on the second node
        factory = connection.kwargs["transport_factory"]
        assert isinstance(factory, Failover)
    finally:
        await connection.close()


class Nodes(TransportFactory):
    """Stands in for TCP: records which port each transport was asked for; refuses the ports in ``down``."""

    def __init__(self, down: set[int]) -> None:
        self.down = down
        self.asked: list[int] = []

    async def create(self, url: URL, **kwargs: object) -> Any:
        self.asked.append(url.port or 0)
        if url.port in self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        return url.port, None


async def test_each_reconnect_starts_from_the_node_after_the_last_one_used():
    # A lost connection says more about its node than an open port: a partitioned node may
    # accept TCP and never answer, so the next attempt goes elsewhere first.
    nodes = Nodes(down={2})
    failover = Failover(nodes, [("n", 1), ("n", 2), ("n", 3)])
    url = URL("amqp://guest:guest@n:1/")
    opened = [(await failover.create(url))[0] for _ in range(4)]
    assert opened == [1, 3, 1, 3]
    assert nodes.asked == [1, 2, 3, 1, 2, 3]
    nodes.down = {1, 2, 3}
    with pytest.raises(ConnectionRefusedError):
        await failover.create(url)


async def test_a_lost_connection_is_told_from_a_refusal_and_from_a_cancel_of_ours():
    # aiormq fails the calls awaiting a connection it gave up on with CancelledError.
    given_up = asyncio.get_running_loop().create_future()
    given_up.set_exception(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError) as failed:
        await given_up
    assert connection_lost(failed.value)
    assert connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    assert connection_lost(aiormq.exceptions.ChannelInvalidStateError("closed"))
    assert not connection_lost(aiormq.exceptions.ChannelAccessRefused("403"))

    async def cancelled() -> bool:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            return connection_lost(exc)
        return True

    ours = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    ours.cancel()
    assert await ours is False


def test_management_failover_urls_follow_the_management_base():
    settings = read_section(
        BrokerSettings,
        {
            "TASKQ_MANAGEMENT_URL": "http://u:p@mq1:15672/",
            "TASKQ_MANAGEMENT_FAILOVER": " http://mq2:15672/, https://mq3:15671 ,",
        },
    )
    assert settings.management_bases == [
        "http://mq1:15672",
        "http://mq2:15672",
        "https://mq3:15671",
    ]
    with pytest.raises(SettingsError, match=r"TASKQ_MANAGEMENT_FAILOVER: .*'http://u:p@mq2'"):
        read_section(BrokerSettings, {"TASKQ_MANAGEMENT_FAILOVER": "http://u:p@mq2"})
    with pytest.raises(SettingsError, match="not a management API base URL"):
        read_section(BrokerSettings, {"TASKQ_MANAGEMENT_FAILOVER": "mq2:15672"})


async def test_a_management_request_goes_to_the_next_node_when_one_refuses(
    vhost: BrokerSettings,
):
    # Nothing listens on port 1 of loopback: that node refuses at once.
    real = vhost.management_base
    settings = vhost.model_copy(
        update={"management_url": SecretStr("http://127.0.0.1:1"), "management_failover": real}
    )
    async with ManagementClient(settings) as management:
        queues = await management.listing(vhost.vhost, "queues")
        assert queues == []
        assert management._bases == [real, "http://127.0.0.1:1"]  # the answering node goes first
    refused = vhost.model_copy(update={"management_url": SecretStr("http://127.0.0.1:1")})
    async with ManagementClient(refused) as management:
        with pytest.raises(
            ManagementApiError, match=re.escape("GET http://127.0.0.1:1/api/queues")
        ):
            await management.listing(vhost.vhost, "queues")
