"""The core's import graph, read from the source with `ast` (imports at module level, inside functions and under
TYPE_CHECKING all count): every module of `harness/` sits in a layer and imports only its own layer or lower ones, so
there is no import circle. `KNOWN_UPWARD` lists the imports that still break this, to be removed, never added to."""
import ast
from pathlib import Path

import harness

CORE = Path(harness.__file__).parent
LAYERS = [
    {"errors", "files", "seeding", "machine", "stats", "sweeps"},  # no harness imports
    {"keys"},  # option declarations
    {"harness", "protocols", "hookspecs", "data"},  # the contract; datasets' cache
    {"functional", "models", "evaluation", "finetune", "training", "decisions", "config", "checkpoints"},  # toolkit
    {"plugins", "store", "regression"},  # the registry of plugins, the results store
    {"runner", "executors"},  # execution
    {"tables", "figures", "diagnose"},  # results
    {"cli", "__main__"},
]
KNOWN_UPWARD = {  # TYPE_CHECKING only: the hooks' return types live with the code that builds tables and figures
    ("hookspecs", "figures"), ("hookspecs", "tables"),
}


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if module in names)


def name_of(path: Path) -> str:
    return "harness" if path.name == "__init__.py" else path.stem


def imports(path: Path) -> set[str]:
    """The core modules `path` imports anywhere in its source, by short name ("harness" for the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "harness":  # from harness import runner
                found |= {f"harness.{a.name}" for a in node.names}
    modules = {name_of(p) for p in CORE.glob("*.py")}
    return {m.split(".")[1] if "." in m else m for m in found
            if m == "harness" or (m.startswith("harness.") and m.split(".")[1] in modules)}


def test_every_core_module_has_a_layer():
    assert sorted(name_of(p) for p in CORE.glob("*.py") if not any(name_of(p) in names for names in LAYERS)) == []


def test_the_core_imports_only_its_own_layer_or_lower_ones():
    upward = {(name_of(p), m) for p in CORE.glob("*.py") for m in imports(p) - {name_of(p)}
              if layer(m) > layer(name_of(p))}
    assert upward <= KNOWN_UPWARD, sorted(upward - KNOWN_UPWARD)
    assert upward == KNOWN_UPWARD, f"fixed: {sorted(KNOWN_UPWARD - upward)}; remove them from KNOWN_UPWARD"


def test_no_import_circle_within_a_layer():
    graph = {name_of(p): imports(p) - {name_of(p)} for p in CORE.glob("*.py")}
    same_layer = {m: {n for n in deps if layer(n) == layer(m)} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import circle: {' -> '.join(path[path.index(module):] + (module,))}"
        if module not in done:
            for dep in same_layer[module]:
                visit(dep, path + (module,))
            done.add(module)

    for module in graph:
        visit(module, ())
