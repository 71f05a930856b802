"""The import direction of DESIGN.md and the packages' public surface."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import consumers
import jobstore
import producers
import taskctl
import telemetry
import topology
import webhooks

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["telemetry", "topology", "jobstore", "producers", "consumers", "webhooks", "taskctl"]
# What each package may import from the others: strictly downwards.
ALLOWED = {layer: set(LAYERS[:i]) for i, layer in enumerate(LAYERS)}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_packages_import_only_what_sits_below_them(package: str):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package] - {package}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


# Run in a fresh interpreter: import every module of the package, then list the packages loaded.
RUNTIME_PROBE = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
    if not module.name.endswith("__main__"):  # running the command line is not importing it
        importlib.import_module(module.name)
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("package", LAYERS)
def test_packages_load_nothing_above_them_at_run_time(package: str):
    # Catches what a static scan cannot: imports by name, and imports inside imported libraries.
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME_PROBE, package],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) & set(LAYERS) - ALLOWED[package] - {package} == set()


def test_only_the_top_imports_modules_by_name():
    # The modules a setting names (handlers) are imported by the assembly, above every package,
    # so no lower package can come to import one above it through a setting's default.
    callers = set()
    for package in LAYERS[:-1]:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(
                    ("import_module", "__import__")
                ):
                    callers.add(str(path.relative_to(ROOT)))
    assert callers == set()


def test_the_default_handler_modules_sit_at_or_below_the_workers():
    from topology.settings import WorkerSettings

    modules = [m.strip() for m in WorkerSettings().handlers.split(",") if m.strip()]
    assert modules
    assert {m.split(".")[0] for m in modules} <= ALLOWED["consumers"] | {"consumers"}


def test_the_rule_catches_an_upward_import(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("from producers.publisher import ConfirmedPublisher\nimport webhooks\n")
    assert imported_packages(module) - ALLOWED["topology"] == {"producers", "webhooks"}


def test_packages_load_nothing_themselves():
    # Every name is imported from the module that holds it: one way, and a command that needs
    # one module does not pay for the package.
    for package in (telemetry, topology, jobstore, producers, consumers, webhooks, taskctl):
        assert package.__all__ == []


def test_every_error_descends_from_one_root():
    from topology import errors

    for value in vars(errors).values():
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == errors.__name__
        ):
            assert issubclass(value, errors.TaskqError), value


def test_python_clients_do_not_load_the_web_stack():
    code = "import sys, producers.client; assert 'fastapi' not in sys.modules, 'fastapi loaded'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
