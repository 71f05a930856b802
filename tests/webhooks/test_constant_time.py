"""W1's static check: every MAC comparison goes through hmac.compare_digest, never ``==``."""

import ast
import hmac
from pathlib import Path

import pytest

import webhooks.schemes
from tests.webhooks.cases import BODY, CASE_IDS, CASES, NOW, Case

SCHEMES = Path(webhooks.schemes.__file__).parent
MODULES = sorted(SCHEMES.glob("*.py"))
# Identifiers that hold a MAC, a signature or a secret in these modules.
SECRETISH = ("digest", "sig", "mac", "expected", "given", "secret")
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


def identifiers(node: ast.AST) -> set[str]:
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id.lower())
        elif isinstance(child, ast.Attribute):
            found.add(child.attr.lower())
    return found


def calls(tree: ast.AST, module: str, function: str) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == function
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == module
        for node in ast.walk(tree)
    )


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def is_constant(node: ast.AST) -> bool:
    """A literal, a module constant (UPPER_CASE), or a tuple or arithmetic of those."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id.lstrip("_").isupper()
    if isinstance(node, ast.Tuple):
        return all(is_constant(item) for item in node.elts)
    if isinstance(node, ast.BinOp):
        return is_constant(node.left) and is_constant(node.right)
    return False


def suspicious_comparisons(tree: ast.AST) -> list[int]:
    """Lines that compare two computed values, or anything MAC-like, with ==, !=, in or is."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, EQUALITY) for op in node.ops):
            sides = [node.left, *node.comparators]
            secretish = any(
                fragment in name
                for side in sides
                for name in identifiers(side)
                for fragment in SECRETISH
            )
            if secretish or not any(is_constant(side) for side in sides):
                lines.append(node.lineno)
    return lines


def test_no_module_compares_two_computed_values_with_equality():
    offenders = {path.name: suspicious_comparisons(parsed(path)) for path in MODULES}
    assert {name: lines for name, lines in offenders.items() if lines} == {}


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("ok = any(e == g for e in expected for g in given)", True),
        ("ok = any(a == b for a, b in pairs)", True),
        ("ok = hmac.digest(k, m, 'sha256') == sig", True),
        ("ok = sig in signatures", True),
        ("ok = expected is None", True),
        ("ok = version == 'v1'", False),
        ("ok = len(raw) not in (_SEED, 2 * _SEED)", False),
        ("ok = value is None", False),
    ],
)
def test_the_rule_flags_computed_comparisons_and_spares_constants(source: str, flagged: bool):
    assert bool(suspicious_comparisons(ast.parse(source))) is flagged


def test_every_module_that_computes_a_mac_compares_with_compare_digest():
    computing = {
        path.stem
        for path in MODULES
        if calls(parsed(path), "hmac", "digest") or calls(parsed(path), "hmac", "new")
    }
    assert computing == {"base", "standard"}
    # base.hmac_matches is the one comparison; the others sign, and verify through it.
    assert calls(parsed(SCHEMES / "base.py"), "hmac", "compare_digest")
    for path in MODULES:
        if path.stem in computing - {"base"}:
            assert "hmac_matches" in identifiers(parsed(path)), path.name


def test_every_verifier_module_compares_itself_or_builds_on_one_that_does():
    for path in MODULES:
        tree = parsed(path)
        verifiers = [
            n.name
            for n in tree.body
            if isinstance(n, ast.ClassDef) and n.name.endswith("Verifier") and n.name != "Verifier"
        ]
        if not verifiers:
            continue
        assert "hmac_matches" in identifiers(tree), path.name


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.name != "standard-ed25519"],
    ids=[i for i in CASE_IDS if i != "standard-ed25519"],
)
def test_every_hmac_verification_really_calls_compare_digest(
    case: Case, monkeypatch: pytest.MonkeyPatch
):
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    case.make().verify(BODY, case.sign(BODY, NOW), NOW)
    assert seen
