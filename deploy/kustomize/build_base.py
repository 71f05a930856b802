"""Render the Helm chart into the Kustomize base, so that both come from one source.

    python deploy/kustomize/build_base.py                      # write deploy/kustomize/base/
    python deploy/kustomize/build_base.py --check              # exit 1 if the committed base is stale
    python deploy/kustomize/build_base.py -f my-values.yaml -f topology-values.yaml --out my-base

It needs the ``helm-python-sdk`` package (the ``deploy`` extra), which embeds Helm's template
engine: no helm binary and no cluster. The base is the chart rendered with its default values
(plus any ``-f`` files), without Helm's own labels and hook annotations.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "taskq"
BASE = Path(__file__).resolve().parent / "base"
RELEASE = "taskq"
NAMESPACE = "taskq"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def render_chart(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Return every manifest the chart renders for ``values``, in template order."""
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(dict(values or {}), name=name, namespace=namespace, is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for document in yaml.safe_load_all(text)
        if document
    ]


def merged(files: Sequence[Path]) -> dict[str, Any]:
    """Return the values of ``files`` merged in order, later maps winning key by key (as helm -f does)."""
    result: dict[str, Any] = {}
    for file in files:
        _merge(result, yaml.safe_load(file.read_text(encoding="utf-8")) or {})
    return result


def _merge(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def for_kustomize(document: dict[str, Any]) -> dict[str, Any]:
    """Return ``document`` without Helm's labels and hook annotations."""
    metadata = document["metadata"]
    labels = metadata.get("labels", {})
    for label in HELM_ONLY_LABELS:
        labels.pop(label, None)
    annotations = metadata.get("annotations", {})
    for key in [k for k in annotations if k.startswith("helm.sh/")]:
        del annotations[key]
    if not annotations:
        metadata.pop("annotations", None)
    return document


def base_files(values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Return the base's files by name: one per kind of object, and the kustomization."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for document in render_chart(values):
        by_file.setdefault(f"{document['kind'].lower()}.yaml", []).append(for_kustomize(document))
    header = "# Rendered from deploy/helm/taskq by deploy/kustomize/build_base.py: do not edit.\n"
    files = {
        name: header + yaml.safe_dump_all(documents, sort_keys=False, width=100)
        for name, documents in sorted(by_file.items())
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": sorted(files),
    }
    files["kustomization.yaml"] = header + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Write the base, or with --check report whether the committed one is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--values", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=BASE)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    files = base_files(merged(args.values))
    if args.check:
        present = {p.name for p in args.out.glob("*.yaml")}
        stale = sorted(
            name
            for name in present | set(files)
            if name not in files
            or name not in present
            or (args.out / name).read_text(encoding="utf-8") != files[name]
        )
        if stale:
            print(f"stale: {', '.join(stale)}; run python {Path(__file__).as_posix()}")
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.yaml"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
