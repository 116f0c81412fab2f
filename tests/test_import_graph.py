"""The package's import graph has no cycle, counting imports inside functions too (a cycle hidden in a
function-level import is still a cycle: the two modules cannot be understood or tested apart)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_dps"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _targets(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The package modules an import statement of `module` loads (a name imported from a package counts as
    its submodule when one exists, else as the package)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return {name for name in names if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set().union(*[_targets(name, path, node, modules) for node in ast.walk(tree)
                                    if isinstance(node, (ast.Import, ast.ImportFrom))] or [set()])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "pyro_dps.draws" in graph["pyro_dps.driver.run_context"]  # the graph is read
    assert cycles(graph) == []


# The stages of the flow data -> model -> potential -> kernels -> driver -> draws/diagnostics -> selection ->
# report -> application, lowest first. A module imports only modules of its own stage or a lower one (an
# "upward" import would let a lower stage depend on what is built on it). Every module must be placed: the
# longest matching prefix names its stage (a prefix also covers `<prefix>.*` and `<prefix>_*`; the package
# itself covers only its `__init__`), and a module nothing matches fails the test.
STAGES = {
    "base": ("pyro_dps", "pyro_dps.errors", "pyro_dps.quiet", "pyro_dps.losses", "pyro_dps.metrics",
             "pyro_dps.networks", "pyro_dps.outputs", "pyro_dps.safefile", "pyro_dps.fingerprint",
             "pyro_dps.model_loader", "pyro_dps.model_hyper", "pyro_dps.rundir"),
    "data": ("pyro_dps.data", "pyro_dps.text", "pyro_dps.training", "pyro_dps.baselines"),
    "model": ("pyro_dps.context",),
    "potential": ("pyro_dps.potential", "pyro_dps.useful_fraction"),
    "kernels": ("pyro_dps.kernels", "pyro_dps.bounds"),
    "driver": ("pyro_dps.driver", "pyro_dps.draws"),
    "diagnostics": ("pyro_dps.arviz_data", "pyro_dps.diagnostics", "pyro_dps.diagnostic_plots"),
    "selection": ("pyro_dps.selection", "pyro_dps.clean_probability", "pyro_dps.probes", "pyro_dps.suggested"),
    "report": ("pyro_dps.report", "pyro_dps.posterior"),
    "application": ("pyro_dps.config", "pyro_dps.spec", "pyro_dps.scoring", "pyro_dps.scenario", "pyro_dps.cli",
                    "pyro_dps.__main__", "pyro_dps.integrations"),
}
RANK = {stage: i for i, stage in enumerate(STAGES)}


def stage_of(module: str) -> str | None:
    """The stage of the longest prefix in STAGES that `module` is or starts with (None if no prefix does)."""
    best = None
    for stage, prefixes in STAGES.items():
        for prefix in prefixes:
            nested = prefix != "pyro_dps" and module.startswith((prefix + ".", prefix + "_"))
            if (module == prefix or nested) and (best is None or len(prefix) > len(best[1])):
                best = (stage, prefix)
    return best[0] if best else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (stage) -> b (stage)' for every import of a module from a later stage."""
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if RANK[stage_of(target)] > RANK[stage_of(module)]:
                out.append(f"{module} ({stage_of(module)}) -> {target} ({stage_of(target)})")
    return out


def test_the_upward_import_finder_finds_one():
    graph = {"pyro_dps.kernels.psgld": {"pyro_dps.driver.fit", "pyro_dps.errors"}, "pyro_dps.driver.fit": set(),
             "pyro_dps.errors": set()}
    assert upward_imports(graph) == ["pyro_dps.kernels.psgld (kernels) -> pyro_dps.driver.fit (driver)"]


def test_every_module_has_a_stage_and_none_imports_a_later_stage():
    graph = import_graph()
    assert [m for m in sorted(graph) if stage_of(m) is None] == []
    assert upward_imports(graph) == []
