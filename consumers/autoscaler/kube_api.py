"""Where the Kubernetes API is and how to authenticate to it: a pod's service account or a kubeconfig."""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

import yaml

from topology.errors import SettingsError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Bound service-account tokens rotate (the kubelet rewrites the file before they expire, an hour
# by default); client-go rereads the file about once a minute, and so do we.
TOKEN_REREAD_SECONDS = 60.0
# Path fields a kubeconfig may give relative to the file that holds them.
_CLUSTER_PATHS = ("certificate-authority",)
_USER_PATHS = ("client-certificate", "client-key", "tokenFile")


class KubeConfigError(SettingsError):
    """No usable Kubernetes API credentials: the message names the file or variable to fix."""


@dataclass(slots=True)
class KubeApi:
    """The API server's URL, the TLS context to reach it, and a bearer token (given or read from a file)."""

    server: str
    ssl_context: SSLContext | None = None  # None: the system's trust store (or plain HTTP)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    namespace: str = "default"  # the namespace of the pod, or of the kubeconfig's context
    _read_at: float = field(default=0.0, init=False, repr=False)

    def authorization(self) -> str | None:
        """Return the ``Authorization`` header value, rereading the token file once a minute."""
        if self.token_file is not None and (
            self.token is None or time.monotonic() - self._read_at >= TOKEN_REREAD_SECONDS
        ):
            try:
                self.token = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                # A token read a minute ago is still worth a try; the server says when it is not.
                if self.token is None:
                    raise KubeConfigError(
                        f"cannot read the token file {self.token_file}: {exc}"
                    ) from exc
            self._read_at = time.monotonic()
        return f"Bearer {self.token}" if self.token else None

    @classmethod
    def in_cluster(
        cls, *, environ: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> KubeApi:
        """Return the API of the cluster this pod runs in, authenticated as its service account."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeConfigError(
                "not in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset"
            )
        token_file = account_dir / "token"
        if not token_file.is_file():
            raise KubeConfigError(
                f"no service account token at {token_file}: mount one "
                "(automountServiceAccountToken: true)"
            )
        namespace_file = account_dir / "namespace"
        namespace = _read_text(namespace_file).strip() if namespace_file.is_file() else "default"
        host = f"[{host}]" if ":" in host else host  # an IPv6 service address
        return cls(
            f"https://{host}:{port}",
            ssl_context=_tls_context(ca_file=account_dir / "ca.crt"),
            token_file=token_file,
            namespace=namespace or "default",
        )

    @classmethod
    def from_kubeconfig(
        cls, path: Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> KubeApi:
        """Return the API of the kubeconfig's current context: ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``."""
        env = os.environ if environ is None else environ
        config = _merged(_kubeconfig_paths(path, env))
        context_name = config.get("current-context")
        if not context_name:
            raise KubeConfigError(
                f"{config['_source']} sets no current-context: run `kubectl config use-context NAME`"
            )
        context = _entry(config, "contexts", context_name, "context")
        cluster_name = _str(context, "cluster", f"context {context_name!r}")
        cluster = _entry(config, "clusters", cluster_name, "cluster")
        user_name = context.get("user")
        user = _entry(config, "users", str(user_name), "user") if user_name else {}
        server = _str(cluster, "server", f"cluster {cluster_name!r}").rstrip("/")
        token, token_file = _user_token(user, str(user_name))
        return cls(
            server,
            ssl_context=_kubeconfig_tls(cluster, user) if server.startswith("https:") else None,
            token=token,
            token_file=token_file,
            namespace=str(context.get("namespace") or "default"),
        )

    @classmethod
    def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
        kubeconfig: Path | None = None,
    ) -> KubeApi:
        """Return the in-cluster API when this runs in a pod, else the kubeconfig's current context."""
        try:
            return cls.in_cluster(environ=environ, account_dir=account_dir)
        except KubeConfigError as in_cluster:
            try:
                return cls.from_kubeconfig(kubeconfig, environ=environ)
            except KubeConfigError as from_file:
                raise KubeConfigError(
                    f"no Kubernetes API credentials: {in_cluster}; and {from_file}"
                ) from from_file


def _kubeconfig_paths(path: Path | None, env: Mapping[str, str]) -> list[Path]:
    if path is not None:
        return [path]
    listed = env.get("KUBECONFIG", "")
    if listed:
        # kubectl reads every file of the list that exists and merges them, first one wins.
        found = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
        existing = [p for p in found if p.is_file()]
        if not existing:
            raise KubeConfigError(f"KUBECONFIG={listed} names no existing file")
        return existing
    home = env.get("HOME")
    default = (Path(home) if home else Path.home()) / ".kube" / "config"
    if not default.is_file():
        raise KubeConfigError(f"no kubeconfig: KUBECONFIG is unset and {default} does not exist")
    return [default]


def _merged(paths: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {"_source": ", ".join(map(str, paths))}
    for path in paths:
        config = _load_kubeconfig(path)
        if not merged.get("current-context") and config.get("current-context"):
            merged["current-context"] = config["current-context"]
        for kind in ("clusters", "contexts", "users"):
            entries = merged.setdefault(kind, {})
            for item in config.get(kind) or []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    entries.setdefault(item["name"], item)
    return merged


def _load_kubeconfig(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise KubeConfigError(f"{path} is not a kubeconfig (expected a mapping)")
    _absolute_paths(config, path.parent)
    return config


def _absolute_paths(config: dict[str, Any], base: Path) -> None:
    """Resolve file paths relative to the kubeconfig that names them, as kubectl does."""
    for kind, key, fields in (
        ("clusters", "cluster", _CLUSTER_PATHS),
        ("users", "user", _USER_PATHS),
    ):
        for item in config.get(kind) or []:
            body = item.get(key) if isinstance(item, dict) else None
            if not isinstance(body, dict):
                continue
            for name in fields:
                if isinstance(body.get(name), str):
                    body[name] = str(base / Path(body[name]).expanduser())


def _entry(config: dict[str, Any], kind: str, name: str, key: str) -> dict[str, Any]:
    item = config.get(kind, {}).get(name)
    body = item.get(key) if isinstance(item, dict) else None
    if not isinstance(body, dict):
        raise KubeConfigError(f"{config['_source']}: no {kind[:-1]} named {name!r}")
    return body


def _str(body: dict[str, Any], key: str, where: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise KubeConfigError(f"kubeconfig {where}: {key!r} is missing or not a string")
    return value


def _user_token(user: dict[str, Any], name: str) -> tuple[str | None, Path | None]:
    for unsupported in ("exec", "auth-provider", "username"):
        if user.get(unsupported):
            raise KubeConfigError(
                f"kubeconfig user {name!r} authenticates with {unsupported!r}, which taskq does "
                "not run: give it a token, tokenFile or a client certificate"
            )
    token = user.get("token")
    token_file = user.get("tokenFile")
    return (
        str(token) if token else None,
        Path(token_file) if isinstance(token_file, str) and not token else None,
    )


def _kubeconfig_tls(cluster: dict[str, Any], user: dict[str, Any]) -> SSLContext:
    context = _tls_context(
        ca_file=Path(cluster["certificate-authority"])
        if cluster.get("certificate-authority")
        else None,
        ca_data=_b64(cluster.get("certificate-authority-data"), "certificate-authority-data"),
    )
    if cluster.get("insecure-skip-tls-verify") is True:
        # The kubeconfig owner asked for it explicitly (kind and minikube setups sometimes do).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = _b64(user.get("client-certificate-data"), "client-certificate-data")
    key = _b64(user.get("client-key-data"), "client-key-data")
    if cert and key:
        _load_client_pem(context, cert, key)
    elif user.get("client-certificate") and user.get("client-key"):
        _load_client_files(context, Path(user["client-certificate"]), Path(user["client-key"]))
    return context


def _tls_context(*, ca_file: Path | None = None, ca_data: str | None = None) -> SSLContext:
    try:
        return ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None, cadata=ca_data or None
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        where = ca_file or "certificate-authority-data"
        raise KubeConfigError(f"cannot load the cluster CA from {where}: {exc}") from exc


def _load_client_files(context: SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(
            f"cannot load the client certificate {cert} / key {key}: {exc}"
        ) from exc


def _load_client_pem(context: SSLContext, cert: str, key: str) -> None:
    # ssl loads a certificate chain only from files: write them to a private temporary
    # directory (mode 0700) and remove it as soon as they are loaded.
    with tempfile.TemporaryDirectory(prefix="taskq-kube-") as folder:
        cert_file, key_file = Path(folder, "client.crt"), Path(folder, "client.key")
        cert_file.write_text(cert, encoding="ascii")
        key_file.touch(mode=0o600)
        key_file.write_text(key, encoding="ascii")
        _load_client_files(context, cert_file, key_file)


def _b64(value: Any, key: str) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise KubeConfigError(f"kubeconfig: {key} is not base64-encoded PEM: {exc}") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KubeConfigError(f"cannot read {path}: {exc}") from exc
