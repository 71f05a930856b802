"""A throwaway CA and a RabbitMQ node of the tests' own that speaks TLS only, with mutual TLS.

The node is a second one beside the machine's default node (never touched): its own name,
ports, data and log directories, configuration and plugins, started with
``rabbitmq-server -detached`` and stopped with ``rabbitmqctl stop``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import trustme

from tests.helpers import scratch_vhost
from topology.settings import BrokerSettings, read_section

USER = "taskq"  # the broker's user, and the common name of the client certificate
START_TIMEOUT = 90.0


class StartError(RuntimeError):
    """A server of the tests' own could not be started."""


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server certificate for 127.0.0.1, and clients good and bad."""

    ca: Path
    server: Path  # certificate chain
    server_key: Path
    client: Path  # issued by ``ca`` to common name ``USER``
    client_key: Path
    stranger: Path  # same name, issued by another CA
    stranger_key: Path
    stranger_ca: Path
    expired: Path  # issued by ``ca``, valid until yesterday
    expired_key: Path

    def client_context(self, kind: str = "client") -> ssl.SSLContext:
        """Return a client context trusting ``ca`` and showing the ``kind`` certificate ("" for none)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if kind:
            context.load_cert_chain(getattr(self, kind), getattr(self, f"{kind}_key"))
        return context


def make_certificates(directory: Path) -> Certificates:
    """Write a throwaway CA, a server certificate and the clients' certificates into ``directory``."""
    ca, other_ca = trustme.CA(), trustme.CA()
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    leaves = {
        "server": ca.issue_cert("127.0.0.1", "localhost", common_name="localhost"),
        "client": ca.issue_cert(USER, common_name=USER),
        "stranger": other_ca.issue_cert(USER, common_name=USER),
        "expired": ca.issue_cert(
            USER,
            common_name=USER,
            not_before=yesterday - datetime.timedelta(days=1),
            not_after=yesterday,
        ),
    }
    paths: dict[str, Path] = {"ca": directory / "ca.pem", "stranger_ca": directory / "other-ca.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    other_ca.cert_pem.write_to_path(paths["stranger_ca"])
    for name, leaf in leaves.items():
        paths[name], paths[f"{name}_key"] = directory / f"{name}.pem", directory / f"{name}.key"
        paths[name].write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(paths[f"{name}_key"])
    return Certificates(**paths)


@dataclass(frozen=True)
class TlsBroker:
    """A running TLS-only node: AMQP over TLS and the management API over HTTPS, both on 127.0.0.1."""

    node: str
    amqps_port: int
    https_port: int
    password: str
    certs: Certificates

    def env(
        self, vhost: str = "/", *, cert: str = "client", external: bool = False
    ) -> dict[str, str]:
        """Return the ``TASKQ_*`` broker settings for ``vhost``, showing the ``cert`` certificate ("" for none)."""
        login = "" if external else f"{USER}:{self.password}@"
        env = {
            "TASKQ_AMQP_URL": f"amqps://{login}127.0.0.1:{self.amqps_port}/{quote(vhost, safe='')}",
            # The management API has no certificate login on 3.10: it always takes the password.
            "TASKQ_MANAGEMENT_URL": f"https://{USER}:{self.password}@127.0.0.1:{self.https_port}",
            "TASKQ_BROKER_TLS_CA_FILE": str(self.certs.ca),
            "TASKQ_BROKER_SASL_EXTERNAL": "true" if external else "false",
        }
        if cert:
            env["TASKQ_BROKER_TLS_CERT_FILE"] = str(getattr(self.certs, cert))
            env["TASKQ_BROKER_TLS_KEY_FILE"] = str(getattr(self.certs, f"{cert}_key"))
        return env

    def settings(
        self, vhost: str = "/", *, cert: str = "client", external: bool = False
    ) -> BrokerSettings:
        """Return broker settings for ``vhost`` as ``env`` describes them."""
        return read_section(BrokerSettings, self.env(vhost, cert=cert, external=external))


@contextmanager
def tls_vhost(broker: TlsBroker) -> Iterator[str]:
    """Create a fresh vhost on the TLS node (through its HTTPS API), yield its name, and delete it."""
    base = f"https://127.0.0.1:{broker.https_port}"
    verify = broker.certs.client_context()
    with (
        httpx.Client(base_url=base, auth=(USER, broker.password), verify=verify) as http,
        scratch_vhost(http, USER, "taskq-tls-test") as name,
    ):
        yield name


@contextmanager
def running_tls_broker() -> Iterator[TlsBroker]:
    """Start a TLS-only RabbitMQ node of our own, yield it, and stop it and remove its files."""
    server = shutil.which("rabbitmq-server")
    ctl = shutil.which("rabbitmqctl")
    if server is None or ctl is None:
        raise FileNotFoundError("rabbitmq-server and rabbitmqctl are not installed")
    # Not under pytest's tmp_path: run as root, the Debian scripts start the node as the
    # rabbitmq user, who must reach these files; a name of its own lets sessions run side by side.
    root = Path(tempfile.mkdtemp(prefix="taskq-tls-"))
    node = f"taskq-tls-{uuid.uuid4().hex[:8]}@localhost"
    try:
        broker, env = _configure(root, node)
        try:  # a node that failed to start in time may still be starting: stop it too
            _start(server, ctl, root, broker, env)
            yield broker
        finally:
            _stop(ctl, root, node)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _configure(root: Path, node: str) -> tuple[TlsBroker, dict[str, str]]:
    (root / "certs").mkdir()
    certs = make_certificates(root / "certs")
    amqps_port, https_port, dist_port = free_ports(3)
    password = secrets.token_urlsafe(16)
    salt = secrets.token_bytes(4)
    digest = hashlib.sha256(salt + password.encode()).digest()
    # Definitions loaded at boot replace the default guest user: only ours exists.
    definitions = {
        "users": [
            {
                "name": USER,
                "password_hash": base64.b64encode(salt + digest).decode(),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"],
            }
        ],
        "vhosts": [{"name": "/"}],
        "permissions": [
            {"user": USER, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
        ],
    }
    (root / "definitions.json").write_text(json.dumps(definitions))
    tls = [
        f"cacertfile = {certs.ca}",
        f"certfile = {certs.server}",
        f"keyfile = {certs.server_key}",
        # Mutual TLS: a client without a certificate this CA signed is refused at the handshake.
        "verify = verify_peer",
        "fail_if_no_peer_cert = true",
    ]
    config = [
        "listeners.tcp = none",  # TLS only: a plaintext client has nothing to connect to
        f"listeners.ssl.1 = 127.0.0.1:{amqps_port}",
        *(f"ssl_options.{line}" for line in tls),
        # EXTERNAL: the client certificate's common name is the user (rabbitmq_auth_mechanism_ssl).
        "auth_mechanisms.1 = EXTERNAL",
        "auth_mechanisms.2 = PLAIN",
        "ssl_cert_login_from = common_name",
        f"load_definitions = {root / 'definitions.json'}",
        f"management.ssl.port = {https_port}",
        "management.ssl.ip = 127.0.0.1",
        *(f"management.ssl.{line}" for line in tls),
    ]
    (root / "rabbitmq.conf").write_text("\n".join(config) + "\n")
    (root / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_auth_mechanism_ssl].\n")
    # Our own env file, so the machine's rabbitmq-env.conf (which names the default node) is not
    # read; Erlang distribution and epmd (should this node start it) on loopback only.
    (root / "rabbitmq-env.conf").write_text(
        "export ERL_EPMD_ADDRESS=127.0.0.1\n"
        'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
    )
    for sub in ("mnesia", "log", "conf.d"):
        (root / sub).mkdir()
    _hand_over(root)
    env = {
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_PID_FILE": str(root / "node.pid"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),  # without .conf, as RabbitMQ wants it
        "RABBITMQ_CONFIG_FILES": str(root / "conf.d"),  # not the machine's conf.d
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),  # none
        "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
    }
    return TlsBroker(node, amqps_port, https_port, password, certs), env


def run_script(*argv: str, env: dict[str, str] | None = None) -> None:
    """Run a server's control program (90 s at most); raise ``StartError`` with its output if it fails."""
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=90, check=False
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise StartError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise StartError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")


def _start(server: str, ctl: str, root: Path, broker: TlsBroker, env: dict[str, str]) -> None:
    run_script(server, "-detached", env={**os.environ, **env})
    deadline = time.monotonic() + START_TIMEOUT
    # A node started detached gives nothing to wait on but its ports.
    while not all(listening(port) for port in (broker.amqps_port, broker.https_port)):
        if time.monotonic() > deadline:
            raise StartError(
                f"{broker.node} did not start in {START_TIMEOUT:g} s: {_log_tail(root)}"
            )
        time.sleep(0.25)
    run_script(ctl, "-n", broker.node, "await_startup", "--timeout", "60")


def _stop(ctl: str, root: Path, node: str) -> None:
    """Stop the node; if rabbitmqctl cannot, end the node's own process by its id."""
    try:
        run_script(ctl, "-n", node, "stop")
    except StartError:
        with suppress(OSError, ValueError):
            os.kill(int((root / "node.pid").read_text().strip()), 15)


def _hand_over(root: Path) -> None:
    """Let the rabbitmq user read and write the node's files when the scripts will switch to it."""
    if os.geteuid() != 0:
        return  # the node runs as the user running the tests
    try:
        account = pwd.getpwnam("rabbitmq")
    except KeyError:
        return
    root.chmod(0o755)
    for path in (root, *root.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def listening(port: int, timeout: float = 1.0) -> bool:
    """Return whether something on 127.0.0.1 accepts a TCP connection on ``port`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(root: Path) -> str:
    logs = sorted((root / "log").glob("*.log"))
    text = "".join(path.read_text(errors="replace") for path in logs)
    return text[-2000:] or "(no log)"
