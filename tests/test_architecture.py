"""The rooms stay apart (DESIGN.md layout, STYLE.md): checked on the source, not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["pipelines", "transforms", "devstore"])
def test_only_orchestration_imports_dagster(package: str) -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in _modules(package) if _imports(p) & {"dagster", "dagster_dlt"}
    ]
    assert offenders == [], f"{package}/ must run without Dagster: {offenders}"


def test_transforms_do_no_io_and_never_read_the_clock() -> None:
    forbidden_calls = {
        "open",
        "now",
        "utcnow",
        "today",
        "time",
        "read_csv",
        "read_parquet",
        "write_csv",
        "write_parquet",
        "scan_csv",
        "scan_parquet",
        "read_ndjson",
        "connect",
        "getenv",
    }
    offenders: list[str] = []
    for path in _modules("transforms"):
        source = path.read_text(encoding="utf-8")
        # A line may read the package's own static data (mapping tables shipped in
        # transforms/data/) if it says so with this marker; pipeline data never.
        static_lines = {i for i, line in enumerate(source.splitlines(), 1) if "# static-data" in line}
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                # An in-memory DuckDB is computation (the linkage engine), not I/O.
                in_memory = (
                    name == "connect"
                    and all(isinstance(a, ast.Constant) and a.value == ":memory:" for a in node.args)
                    and not node.keywords
                )
                if name in forbidden_calls and not in_memory and node.lineno not in static_lines:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}()")
        if _imports(path) & {"httpx", "requests", "dlt", "sqlalchemy", "os"}:
            offenders.append(f"{path.relative_to(ROOT)} imports an I/O library")
    assert offenders == [], "transforms/ must be pure: " + ", ".join(offenders)


@pytest.mark.parametrize("package", ["pipelines", "transforms", "devstore", "orchestration"])
def test_no_environment_reads_at_import_time(package: str) -> None:
    offenders: list[str] = []
    for path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: functions may read settings when called
            for sub in ast.walk(node):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    break
                if isinstance(sub, ast.Attribute) and sub.attr in {"environ", "getenv"}:
                    offenders.append(f"{path.relative_to(ROOT)}:{sub.lineno}")
    assert offenders == [], f"environment read at import time: {offenders}"


@pytest.mark.parametrize("package", ["pipelines", "orchestration", "transforms"])
def test_product_loggers_live_under_shopsync(package: str) -> None:
    """Dagster manages (JSON, redacted, with store and run) only the ``shopsync`` logger tree."""
    offenders = []
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger"):
                continue
            name = node.args[0] if node.args else None
            if isinstance(name, ast.Constant) and str(name.value).startswith("shopsync"):
                continue
            if name is None and path.name == "logs.py":
                continue  # the root logger, which configure_logging owns
            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"loggers outside 'shopsync.*' escape the JSON console: {offenders}"
