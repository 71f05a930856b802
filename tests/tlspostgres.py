"""A PostgreSQL cluster of the tests' own that takes TLS connections with client certificates only.

A second cluster beside the machine's (never touched): its own data directory, loopback port and
socket directory, made with ``initdb`` and run with ``pg_ctl``. Its ``pg_hba.conf`` takes
``hostssl`` connections authenticated by certificate (the common name is the user) and rejects
every plaintext TCP connection.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from tests.tlsbroker import (
    USER,
    Certificates,
    StartError,
    free_ports,
    make_certificates,
    run_script,
)


@dataclass(frozen=True)
class TlsPostgres:
    """A running TLS-only cluster on 127.0.0.1 whose superuser is ``USER``."""

    port: int
    certs: Certificates

    def dsn(self, **params: str) -> str:
        """Return a DSN for the ``postgres`` database with ``params`` (``sslmode``, ``sslcert``...)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres?{urlencode(params)}"

    def verified_dsn(self, cert: str = "client", ca: str = "ca") -> str:
        """Return a ``verify-full`` DSN trusting the ``ca`` CA, showing the ``cert`` certificate ("" for none)."""
        params = {"sslmode": "verify-full", "sslrootcert": str(getattr(self.certs, ca))}
        if cert:
            params["sslcert"] = str(getattr(self.certs, cert))
            params["sslkey"] = str(getattr(self.certs, f"{cert}_key"))
        return self.dsn(**params)


@contextmanager
def running_tls_postgres() -> Iterator[TlsPostgres]:
    """Start a TLS-only PostgreSQL cluster of our own, yield it, then stop it and remove its files."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="taskq-tls-pg-"))
    try:
        (root / "certs").mkdir()
        certs = make_certificates(root / "certs")
        (port,) = free_ports(1)
        owner = _owner(root)
        data = root / "data"
        _run(owner, initdb, "-D", str(data), "-U", USER, "--no-sync")
        _configure(data, root, certs, port)
        log = root / "postgres.log"
        try:  # a cluster that failed to start in time may still be starting: stop it too
            try:
                _run(owner, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start")
            except StartError as exc:
                raise StartError(f"{exc}\n{log.read_text(errors='replace')[-2000:]}") from exc
            yield TlsPostgres(port, certs)
        finally:
            with suppress(StartError):
                _run(owner, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _configure(data: Path, root: Path, certs: Certificates, port: int) -> None:
    # The server's own key must be private to the cluster's owner, or PostgreSQL refuses it.
    key = data / "server.key"
    shutil.copyfile(certs.server_key, key)
    key.chmod(0o600)
    os.chown(key, data.stat().st_uid, data.stat().st_gid)
    settings = {
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{root}'",
        "ssl": "on",
        "ssl_cert_file": f"'{certs.server}'",
        "ssl_key_file": f"'{key}'",
        "ssl_ca_file": f"'{certs.ca}'",
        "fsync": "off",  # a throwaway cluster
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
    (data / "pg_hba.conf").write_text(
        # TLS with a certificate this CA signed, whose common name is the user; nothing else.
        "hostssl all all 127.0.0.1/32 cert\nhostnossl all all 127.0.0.1/32 reject\n"
    )


def _binary(name: str) -> str:
    # Debian keeps the server's programs out of PATH, under the version's directory.
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (Debian package postgresql)")
    return found


def _owner(root: Path) -> str | None:
    """Return the user to run the cluster as: postgres when we are root (it refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise FileNotFoundError(
            "no postgres user to run PostgreSQL as (Debian package postgresql)"
        ) from exc
    for path in (root, *root.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)
    root.chmod(0o755)
    return account.pw_name


def _run(owner: str | None, *command: str) -> None:
    run_script(*(["runuser", "-u", owner, "--", *command] if owner else command))
