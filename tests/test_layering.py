"""The package's layering, read from the source with ``ast``: no import cycle between the
modules of ``metaseg``, no import that runs back up the layers, no unlisted import inside a
function.

Print the analysis (layers, every import between modules, cycles, violations)::

    python -m tests.test_layering            # summary
    python -m tests.test_layering --edges    # and every import, module -> module

An import of ``a.b.c`` runs the ``__init__`` of ``a.b`` too: it counts as an import of both
(unless the importer is inside ``a.b`` already). ``from a.b import name`` imports the module
``a.b.name`` if there is one, else the package ``a.b``. Imports under ``if TYPE_CHECKING:``
never run: they are checked against the layers but make no cycle.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib
import sys
from typing import Dict, Iterator, List, Optional, Set, Tuple

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT = "metaseg"

# Bottom to top. A module may import modules of its own layer and of the layers below it.
# A name is a module or a package (and then everything under it); the longest name wins.
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("foundation", ("metaseg", "metaseg.errors", "metaseg.config", "metaseg.specs",
                    "metaseg.resources", "metaseg.quiet", "metaseg.threads",
                    "metaseg.jsonfile")),
    ("data: what an episode passes through", ("metaseg.data",)),
    ("models", ("metaseg.models",)),
    ("checkpoints", ("metaseg.checkpoints",)),
    ("meta-learning", ("metaseg.meta", "metaseg.distribute")),
    ("evaluation", ("metaseg.evaluation",)),
    ("datasets: offline builders and annotation files",
     ("metaseg.datasets", "metaseg.tfds", "metaseg.annotations")),
    ("runs", ("metaseg.pipeline", "metaseg.joint", "metaseg.presets")),
    ("commands", ("metaseg.flags", "metaseg.cli", "metaseg.app", "metaseg.__main__",
                  "metaseg.joint_train", "metaseg.tfds.__main__")),
)

# The only imports inside functions: (importer, imported) -> why the import waits. An import
# made to dodge a cycle does not belong here: the cycle test sees through it.
_SUBCOMMAND = "a subcommand's module loads only when that subcommand runs"
_TF = ("TensorFlow (through this module) loads when the command runs, after its flags are "
       "parsed, so --help stays fast (tests/cli/test_metaseg_cli.py)")
_APP = "the app (starlette, uvicorn, TensorFlow) loads when `metaseg app` runs"
LAZY: Dict[Tuple[str, str], str] = {
    **{("metaseg.__main__", f"metaseg.{m}"): _SUBCOMMAND
       for m in ("app.command", "cli.adapt", "cli.export", "cli.info", "cli.predict",
                 "cli.preset")},
    ("metaseg.annotations", "metaseg.data.image_io"):
        "metaseg.data loads TensorFlow: only once a mask is drawn, after the annotation "
        "file was read and checked",
    ("metaseg.annotations", "metaseg.datasets.coco"):
        "pycocotools and TensorFlow load only for a COCO file, when a mask is drawn",
    **{("metaseg.app.command", f"metaseg.app.{m}"): _APP
       for m in ("adaptation", "server", "service", "workdir")},
    ("metaseg.app.service", "metaseg.cli.export"): "the exporter loads when asked to export",
    **{("metaseg.cli.adapt", f"metaseg.{m}"): _TF
       for m in ("checkpoints", "cli.auto", "cli.folders", "cli.output", "cli.scores",
                 "cli.segment", "data.episodes", "evaluation.quality", "meta.adapt")},
    ("metaseg.cli.auto", "metaseg.evaluation.autosteps"): _TF,
    ("metaseg.cli.auto", "metaseg.specs"): _TF,
    **{("metaseg.cli.export", f"metaseg.{m}"): _TF
       for m in ("checkpoints", "cli.deploy", "cli.output", "cli.segment")},
    ("metaseg.cli.info", "metaseg.checkpoints"): _TF,
    ("metaseg.cli.info", "metaseg.models.tf1_checkpoint"): _TF,
    **{("metaseg.cli.predict", f"metaseg.{m}"): _TF
       for m in ("checkpoints", "cli.folders", "cli.output", "cli.scores", "cli.segment")},
    ("metaseg.cli.preset", "metaseg.presets"): _TF,
    ("metaseg.joint_train", "metaseg.joint"): _TF,
    ("metaseg.pipeline", "metaseg.tfds"):
        "tensorflow_datasets and metaseg's tfds builders load only for --dataset tfds:",
}

# Import cycles that another change removes; remove an entry when its cycle is gone.
KNOWN_CYCLES: Tuple[Tuple[str, Set[str]], ...] = ()


@dataclasses.dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    lazy: bool         # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``
    implicit: bool     # a package whose __init__ runs because a module inside it is imported


def modules(root: pathlib.Path = REPO) -> Dict[str, pathlib.Path]:
    """``{dotted name: path}`` of every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted((root / ROOT).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(name: str, known: Dict[str, pathlib.Path]) -> Optional[str]:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _statements(tree: ast.AST) -> Iterator[Tuple[ast.stmt, bool, bool]]:
    """``(import statement, inside a function, under TYPE_CHECKING)`` for every import."""
    def walk(node, lazy, typing_only):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, lazy, typing_only
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.Lambda))
            checking = typing_only or (isinstance(child, ast.If)
                                       and "TYPE_CHECKING" in ast.unparse(child.test))
            yield from walk(child, inner, checking)
    yield from walk(tree, False, False)


def _targets(node: ast.stmt, importer: str, is_package: bool,
             known: Dict[str, pathlib.Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:  # relative: from the importer's package, level - 1 packages up
        package = importer if is_package else importer.rpartition(".")[0]
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
    yield from submodules
    if len(submodules) < len(node.names):  # names defined by the module itself
        yield module


def imports(root: pathlib.Path = REPO) -> List[Import]:
    """Every import of a metaseg module by a metaseg module, with the packages it runs."""
    known = modules(root)
    found = []
    for importer, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, lazy, typing_only in _statements(tree):
            for target in _targets(node, importer, path.name == "__init__.py", known):
                if not (target == ROOT or target.startswith(ROOT + ".")):
                    continue
                module = _resolve(target, known)
                if module is None or module == importer:
                    continue
                found.append(Import(importer, module, node.lineno, lazy, typing_only, False))
                parts = module.split(".")
                for i in range(1, len(parts)):  # the packages whose __init__ runs first
                    package = ".".join(parts[:i])
                    if not (importer == package or importer.startswith(package + ".")):
                        found.append(Import(importer, package, node.lineno, lazy,
                                            typing_only, True))
    return found


def _inside(module: str, name: str) -> bool:
    """``module`` is ``name`` or a module of the package ``name``."""
    return module == name or module.startswith(name + ".")


def layer_of(module: str) -> Optional[int]:
    """Index in LAYERS of the longest name that holds ``module``; None if none does."""
    best, index = "", None
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or (name != ROOT and _inside(module, name))) and \
                    len(name) > len(best):
                best, index = name, i
    return index


def upward(found: List[Import]) -> List[Import]:
    """Imports of a module in a higher layer than the importer's."""
    return [i for i in found
            if layer_of(i.importer) is not None and layer_of(i.imported) is not None
            and layer_of(i.imported) > layer_of(i.importer)]


def cycles(found: List[Import]) -> List[Set[str]]:
    """The strongly connected components of more than one module (Tarjan), over the imports
    that run (module-level and inside functions, not TYPE_CHECKING)."""
    graph = collections.defaultdict(set)
    for i in found:
        if not i.typing_only:
            graph[i.importer].add(i.imported)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components = []

    def visit(node):  # iterative, so deep chains do not hit the recursion limit
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == current:
                        break
                if len(component) > 1:
                    components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _known(component: Set[str]) -> Optional[str]:
    for reason, members in KNOWN_CYCLES:
        if component <= members:
            return reason
    return None


def _describe(i: Import) -> str:
    how = ("implicitly (package __init__)" if i.implicit else
           "under TYPE_CHECKING" if i.typing_only else "inside a function" if i.lazy else "")
    return f"{i.importer} (line {i.line}) imports {i.imported} {how}".rstrip()


# --- the tests ------------------------------------------------------------------------------

def test_every_module_has_a_layer():
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert len(modules()) > 100 and unplaced == [], f"add to LAYERS: {unplaced}"


def test_no_import_runs_back_up_the_layers():
    found = imports()
    wrong = [f"{_describe(i)}: layer '{LAYERS[layer_of(i.importer)][0]}' may not import "
             f"layer '{LAYERS[layer_of(i.imported)][0]}'" for i in upward(found)]
    assert len(found) > 200 and wrong == []


def test_data_imports_nothing_above_it():
    """The rule the layers exist for, stated on its own: an episode's modules import no
    model, meta-learner, evaluation, offline builder or command."""
    above = ("metaseg.models", "metaseg.meta", "metaseg.checkpoints", "metaseg.evaluation",
             "metaseg.datasets", "metaseg.tfds", "metaseg.pipeline", "metaseg.cli",
             "metaseg.app", "metaseg.flags")
    data = [i for i in imports() if _inside(i.importer, "metaseg.data")]
    wrong = [_describe(i) for i in data if any(_inside(i.imported, a) for a in above)]
    assert len(data) > 10 and wrong == []


def test_library_imports_no_command():
    commands = len(LAYERS) - 1
    library = [i for i in imports() if layer_of(i.importer) < commands]
    wrong = [_describe(i) for i in library if layer_of(i.imported) == commands]
    assert len(library) > 100 and wrong == []


def test_the_package_imports_no_script():
    """``data_tools/``, ``run_metasegnet.py``, ``bench/``, ``studies/`` and ``tests/`` use the
    package, never the other way round (the installed package must not need a clone)."""
    scripts = ("data_tools", "run_metasegnet", "bench", "studies", "tests", "flags")
    wrong = []
    for importer, path in modules().items():
        for node, _, _ in _statements(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [] if node.level else [node.module or ""])
            wrong += [f"{importer} (line {node.lineno}) imports {n}" for n in names
                      if n.split(".")[0] in scripts]
    assert wrong == []


def test_no_import_cycle():
    found = cycles(imports())
    unknown = [sorted(c) for c in found if _known(c) is None]
    assert unknown == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in unknown)


def test_known_cycles_still_exist():
    """A cycle listed in KNOWN_CYCLES that is gone must leave the list."""
    found = cycles(imports())
    gone = [reason for reason, members in KNOWN_CYCLES
            if not any(c <= members for c in found)]
    assert gone == [], f"remove from KNOWN_CYCLES: {gone}"


def test_imports_inside_functions_are_listed_with_a_reason():
    lazy = {(i.importer, i.imported): i for i in imports()
            if i.lazy and not i.implicit and not i.typing_only}
    unlisted = [_describe(i) for key, i in sorted(lazy.items()) if key not in LAZY]
    stale = [f"{a} -> {b}" for a, b in sorted(LAZY) if (a, b) not in lazy]
    assert unlisted == [], "import at module level, or list in LAZY with a reason: " + \
        "; ".join(unlisted)
    assert stale == [], f"no longer imported inside a function, remove from LAZY: {stale}"
    assert all(reason.strip() for reason in LAZY.values())


def test_the_analysis_reads_imports_as_python_runs_them(tmp_path):
    """The analysis itself, on a tiny package: submodule vs name, relative imports, the
    package __init__ an import runs, function-level and TYPE_CHECKING imports, a cycle."""
    package = tmp_path / ROOT
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("from metaseg.low.a import A\n")
    (package / "low" / "a.py").write_text("from . import b\nA = 1\n")
    (package / "low" / "b.py").write_text("def f():\n    from metaseg.low import a\n")
    (package / "top.py").write_text(
        "from typing import TYPE_CHECKING\nfrom metaseg.low import b\n"
        "if TYPE_CHECKING:\n    from metaseg import low\n")
    found = {(i.importer, i.imported, i.lazy, i.typing_only, i.implicit)
             for i in imports(tmp_path)}
    assert found == {
        ("metaseg.low", "metaseg.low.a", False, False, False),
        ("metaseg.low.a", "metaseg.low.b", False, False, False),
        ("metaseg.low.b", "metaseg.low.a", True, False, False),
        ("metaseg.top", "metaseg.low.b", False, False, False),
        ("metaseg.top", "metaseg.low", False, False, True),
        ("metaseg.top", "metaseg.low", False, True, False),
    }
    assert cycles(imports(tmp_path)) == [{"metaseg.low.a", "metaseg.low.b"}]


# --- the analysis as a script ---------------------------------------------------------------

def main(argv: List[str]) -> int:
    found = imports()
    for n, (name, members) in enumerate(LAYERS):
        inside = sorted(m for m in modules() if layer_of(m) == n)
        print(f"layer {n} {name}: {len(inside)} modules ({', '.join(members)})")
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    if unplaced:
        print("no layer:", ", ".join(unplaced))
    if "--edges" in argv:
        for i in sorted(found, key=lambda i: (i.importer, i.imported)):
            print("  " + _describe(i))
    for i in upward(found):
        print("UPWARD", _describe(i))
    for component in cycles(found):
        reason = _known(component)
        print("CYCLE" + (f" (known: {reason})" if reason else ""), " <-> ".join(sorted(component)))
    lazy = sorted({(i.importer, i.imported) for i in found
                   if i.lazy and not i.implicit and not i.typing_only})
    print(f"{len(lazy)} imports inside functions, "
          f"{sum(key not in LAZY for key in lazy)} of them not in LAZY")
    for key in lazy:
        if key not in LAZY:
            print("  LAZY?", " -> ".join(key))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
