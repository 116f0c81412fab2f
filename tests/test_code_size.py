"""Size limits of the code outside the tests: no module over 400 lines and no function (methods and nested
functions included) over 60 lines, in the package, the model files, the notebooks and the benchmarks. A
long module or function is a sign of one doing several jobs; split it by idea rather than raise a limit."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("pyro_dps", "models", "analysis", "benchmarks")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(root: Path = ROOT) -> list[str]:
    """'path: N lines' for each module over the limit, 'path:line name: N lines' for each function over it."""
    out = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            rel = path.relative_to(root)
            lines = source.count("\n")
            if lines > MAX_MODULE_LINES:
                out.append(f"{rel}: {lines} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        out.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return out


def test_the_size_check_finds_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pyro_dps").mkdir()
    (tmp_path / "pyro_dps" / "long.py").write_text(f"def f():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    assert oversized(tmp_path) == ["pyro_dps/long.py: 461 lines", "pyro_dps/long.py:1 f: 61 lines"]


def test_no_module_or_function_outside_the_tests_is_over_its_limit():
    assert oversized() == []


def test_every_subpackage_is_in_the_installed_package_list():
    """pyproject.toml lists the packages explicitly: a new stage folder left out would be missing from a
    wheel (an editable install still finds it, so only a test notices)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pyro_dps").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
    assert "pyro_dps.models" in listed  # mapped from the top-level models/ folder
