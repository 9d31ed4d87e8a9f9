"""The dependency rule: schemas imports none of ours; producers, streams, sinks import only schemas."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"schemas", "producers", "streams", "sinks", "pupilflow"}
ALLOWED = {
    "schemas": {"schemas"},
    "producers": {"schemas", "producers"},
    "streams": {"schemas", "streams"},
    "sinks": {"schemas", "sinks"},
    "pupilflow": OURS,
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every package a module imports (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_layer_rule_allows(package: str) -> None:
    offenders = {}
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    for path in files:
        bad = (imported_packages(path) & OURS) - ALLOWED[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom sinks.writer import AuditSink\nfrom . import sibling\n")
    assert imported_packages(module) == {"os", "sinks"}
