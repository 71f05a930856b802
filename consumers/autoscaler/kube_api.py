"""Where the Kubernetes API is and how to authenticate to it, loaded by kubernetes_asyncio."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from topology.errors import SettingsError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config.kube_config import KubeConfigLoader

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(SettingsError):
    """No usable Kubernetes API credentials: the message names the file or variable to fix."""


@dataclass(frozen=True, slots=True)
class KubeApi:
    """The client configuration of one Kubernetes API and the namespace it defaults to."""

    configuration: Configuration
    namespace: str = "default"  # the namespace of the pod, or of the kubeconfig's context

    @classmethod
    async def in_cluster(
        cls, *, environ: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> KubeApi:
        """Return the API of the cluster this pod runs in, as its service account (token reread each minute)."""
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

        configuration = Configuration()
        where = f"in a pod ($KUBERNETES_SERVICE_HOST, $KUBERNETES_SERVICE_PORT, {account_dir})"
        with _named(where):
            loader = InClusterConfigLoader(
                str(account_dir / "token"),
                str(account_dir / "ca.crt"),
                environ=dict(os.environ if environ is None else environ),
            )
            loader.load_and_set(configuration)
            namespace_file = account_dir / "namespace"
            namespace = namespace_file.read_text().strip() if namespace_file.is_file() else ""
        return await cls(configuration, namespace or "default")._checked(where)

    @classmethod
    async def from_kubeconfig(
        cls, path: Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> KubeApi:
        """Return the API of the kubeconfig's current context: ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``."""
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config import load_kube_config

        files = _kubeconfig_files(path, os.environ if environ is None else environ)
        where = f"kubeconfig {files}"
        configuration = Configuration()
        with _named(where):
            loader = await load_kube_config(
                files, client_configuration=configuration, persist_config=False
            )
            context = (loader.current_context or {}).get("context") or {}
            # The loader ran the exec plugin once; its token expires, so rerun it when it has.
            if loader._user is not None and "exec" in loader._user:
                configuration.refresh_api_key_hook = _exec_refresher(loader)
        return await cls(configuration, str(context.get("namespace") or "default"))._checked(where)

    @classmethod
    async def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
        kubeconfig: Path | None = None,
    ) -> KubeApi:
        """Return the in-cluster API when this runs in a pod, else the kubeconfig's current context."""
        try:
            return await cls.in_cluster(environ=environ, account_dir=account_dir)
        except KubeConfigError as in_cluster:
            try:
                return await cls.from_kubeconfig(kubeconfig, environ=environ)
            except KubeConfigError as from_file:
                raise KubeConfigError(
                    f"no Kubernetes API credentials: {in_cluster}; and {from_file}"
                ) from from_file

    async def _checked(self, where: str) -> KubeApi:
        """Build the client once, so that a bad CA or client certificate fails here, named."""
        from kubernetes_asyncio.client import ApiClient

        with _named(where):
            await ApiClient(self.configuration).close()
        return self


def _kubeconfig_files(path: Path | None, env: Mapping[str, str]) -> str:
    """Return ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``, when one of its files exists."""
    files = str(path) if path else env.get("KUBECONFIG", "")
    if not files:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        files = str(home / ".kube" / "config")
    # kubectl merges every file of $KUBECONFIG that exists; when none does, say which to fix.
    if not any(Path(p).expanduser().is_file() for p in files.split(os.pathsep) if p):
        raise KubeConfigError(
            f"no kubeconfig at {files}"
            if path
            else f"KUBECONFIG={files} names no existing file"
            if env.get("KUBECONFIG")
            else f"no kubeconfig: KUBECONFIG is unset and {files} does not exist"
        )
    return files


def _exec_refresher(loader: KubeConfigLoader) -> Callable[[Configuration], Awaitable[None]]:
    """Return a hook run before each request that reruns the exec plugin once its token expired."""

    async def refresh(configuration: Configuration) -> None:
        await loader.load_from_exec_plugin()
        configuration.api_key["BearerToken"] = loader.token

    return refresh


@contextmanager
def _named(where: str) -> Iterator[None]:
    """Translate whatever the loaders raise into a KubeConfigError naming ``where``."""
    from kubernetes_asyncio.config import ConfigException

    try:
        yield
    except (ConfigException, OSError, yaml.YAMLError, ValueError) as exc:  # OSError: ssl's too
        raise KubeConfigError(f"{where}: {exc}") from exc
    except (TypeError, AttributeError, KeyError) as exc:
        # The loader indexes the YAML as it finds it: a wrong shape surfaces as one of these.
        raise KubeConfigError(f"{where} is not a valid kubeconfig: {exc!r}") from exc
