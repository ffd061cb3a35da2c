"""The import direction of issue 13, enforced: the contracts in pyproject.toml
(``[tool.importlinter]``) run through import-linter, and broker/ hides no import inside a
function (the way cycles used to be papered over)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # installed with the test extras


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contracts_cover_the_core() -> None:
    """The linter passing means nothing if the contracts were dropped or narrowed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert not config.get("exclude_type_checking_imports")  # "not even for type checking"
    assert all(not contract.get("allow_indirect_imports") for contract in config["contracts"])
    forbidden = {(source, target) for contract in config["contracts"]
                 if contract["type"] == "forbidden"
                 for source in contract["source_modules"]
                 for target in contract["forbidden_modules"]}
    front_ends = ("smartbroker.server", "smartbroker.handlers", "smartbroker.management",
                  "smartbroker.cli", "fastapi", "uvicorn")
    for source in ("broker", "queues", "exchanges", "dlq", "store"):
        for target in front_ends:
            assert (f"smartbroker.{source}", target) in forbidden
    for target in ("asyncio", "socket", "ssl", "smartbroker.server", "smartbroker.broker",
                   "smartbroker.handlers", "smartbroker.queues"):
        assert ("smartbroker.protocol", target) in forbidden


def test_the_linter_sees_a_broken_contract(tmp_path: Path) -> None:
    """The same settings catch a real import (server/ uses asyncio): the linter is not
    passing because it analysed nothing (a package without __init__.py is invisible)."""
    config = tmp_path / "contract.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["smartbroker"]\ninclude_external_packages = true\n'
        '[[tool.importlinter.contracts]]\nname = "canary"\ntype = "forbidden"\n'
        'source_modules = ["smartbroker.server"]\nforbidden_modules = ["asyncio"]\n')
    result = _lint(str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "smartbroker.server is not allowed to import asyncio" in result.stdout


def test_broker_imports_nothing_inside_functions() -> None:
    hidden = []
    for path in sorted((ROOT / "smartbroker" / "broker").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                hidden += [f"{path.name}:{inner.lineno} {ast.unparse(inner)}"
                           for inner in ast.walk(node)
                           if isinstance(inner, ast.Import | ast.ImportFrom)]
    assert not hidden, hidden
