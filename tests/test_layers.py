"""The layout held by a test (issue #22): no import cycles, rooms import only downwards,
and the torch-free rooms never import the `train` extra.

Read from the source with `ast` (nothing is imported, so a missing extra cannot hide an
import): every `import` and `from … import` in streams/, models/ and export/, at module
level, inside functions and under `if TYPE_CHECKING:`. A dependency is on the module
named, not on the package `__init__`s above it; `from pkg import name` depends on
`pkg.name` when that is a module or a package, else on `pkg`.

Type-only imports (under `if TYPE_CHECKING:`) are held to the same rules as the others:
they take part in the cycle check and obey the layer table, because an annotation that
names a higher room is a dependency on it all the same (mypy follows it, and a reader
must know the higher room to read the lower one). The only thing they change is the
tag in a report.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal

ROOT: Final = Path(__file__).resolve().parents[1]
#: Import name → folder, as pyproject's `package-dir` maps them.
PACKAGE_DIRS: Final = {
    "memberpulse.streams": "streams",
    "memberpulse.models": "models",
    "memberpulse.export": "export",
}

# ---------------------------------------------------------------------------------------
# The rules. A room is a subpackage of memberpulse.streams (or one of its top modules),
# or memberpulse.models, or memberpulse.export. Each room may import itself and the rooms
# named in its row, nothing else of memberpulse. The layers, highest first:
#   cli → local / bench / api → worker → state / decisions / serving → settings → models
# Siblings of one layer (local/bench/api; state/decisions/serving) do not import each
# other, except bench → local (it starts the stack). simulate stands beside the layers
# (it imports models only); the front rooms that feed it to the stack (cli, local, bench)
# may import it. export is the build side: bench (the model benchmark) and cli use it.
_RUNTIME: Final = frozenset({"state", "decisions", "serving", "settings", "models"})
_FRONT: Final = _RUNTIME | {"worker", "simulate"}
EVERYTHING: Final = frozenset(
    {"cli", "local", "bench", "api", "worker", "state", "decisions", "serving", "simulate",
     "settings", "app", "streams.__init__", "models", "export"}
)  # fmt: skip

MAY_IMPORT: Final[Mapping[str, frozenset[str]]] = {
    # room               rooms it may import besides itself
    "cli":               EVERYTHING,
    "local":             _FRONT | {"export"},  # `make run` exports its default model
    "bench":             _FRONT | {"local", "export"},
    "api":               _FRONT - {"simulate"},
    "worker":            _RUNTIME,
    "state":             frozenset({"settings", "models"}),
    "decisions":         frozenset({"settings", "models"}),
    "serving":           frozenset({"settings", "models"}),
    "settings":          frozenset({"models"}),
    "models":            frozenset(),
    "simulate":          frozenset({"models"}),
    "export":            frozenset({"models", "serving"}),  # checks its ONNX with serving
    "app":               frozenset({"worker"}),  # re-exports worker.app for old deployments
    "streams.__init__":  frozenset(),
}  # fmt: skip

#: The `train` extra: what a worker must run without (onnxruntime is not in it).
TRAIN_STACK: Final = frozenset({"torch", "transformers", "onnx", "onnxscript"})
#: Where the train stack may be imported: "never" (no import of any kind, type-only
#: included: serving and the worker run from an ONNX file alone), "in functions" (only
#: inside a function body, so importing the room needs no torch). models and export are
#: the build side and are not listed: they may import it anywhere.
TRAIN_STACK_POLICY: Final[Mapping[str, Literal["never", "in functions"]]] = {
    "worker": "never",
    "state": "never",
    "decisions": "never",
    "serving": "never",
    "settings": "never",
    "simulate": "never",
    "api": "never",
    "app": "never",
    "streams.__init__": "never",
    "cli": "in functions",
    "local": "in functions",
    "bench": "in functions",
}

Where = Literal["module", "function", "type-only"]


@dataclass(frozen=True)
class Import:
    """One imported module, where it was imported and how."""

    source: str  # the importing module
    path: str  # its file, relative to the tree's root
    line: int
    text: str  # the statement as written (one name of a `from … import a, b`)
    target: str  # the module depended on
    where: Where

    def __str__(self) -> str:
        tag = "" if self.where == "module" else f"  [{self.where}]"
        return f"{self.path}:{self.line}: {self.text}{tag}"


@dataclass(frozen=True)
class Tree:
    """The modules of a source tree (name → file) and every import they make."""

    root: Path
    modules: Mapping[str, Path]
    imports: tuple[Import, ...]

    def internal(self) -> list[Import]:
        """The imports of one of the tree's own modules."""
        return [i for i in self.imports if i.target in self.modules]


def module_names(root: Path, package_dirs: Mapping[str, str]) -> dict[str, Path]:
    """Every module under the mapped folders: `a/b/__init__.py` is module `pkg.a.b`."""
    modules: dict[str, Path] = {}
    for package, folder in package_dirs.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, tree: Tree, source: str, path: str, is_package: bool) -> None:
        self.modules = tree.modules
        self.source = source
        self.path = path
        self.package = source if is_package else source.rpartition(".")[0]
        self.where: Where = "module"
        self.found: list[Import] = []

    def _within(self, where: Where, nodes: Iterable[ast.AST]) -> None:
        outer, self.where = self.where, where
        for node in nodes:
            self.visit(node)
        self.where = outer

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # decorators and defaults run at import time; the body runs when called
        self._within(self.where, [*node.decorator_list, node.args])
        self._within("type-only" if self.where == "type-only" else "function", node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._within("type-only", node.body)
            self._within(self.where, node.orelse)
        else:
            self.generic_visit(node)

    def _add(self, node: ast.stmt, text: str, target: str) -> None:
        self.found.append(Import(self.source, self.path, node.lineno, text, target, self.where))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, f"import {alias.name}", alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package, up level-1
            anchor = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        dots = "." * node.level
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            target = submodule if submodule in self.modules else base
            self._add(node, f"from {dots}{node.module or ''} import {alias.name}", target)


def collect(root: Path, package_dirs: Mapping[str, str] = PACKAGE_DIRS) -> Tree:
    """Parse every module under `root`'s mapped folders and gather its imports."""
    tree = Tree(root, module_names(root, package_dirs), ())
    found: list[Import] = []
    for name, path in tree.modules.items():
        rel = path.relative_to(root).as_posix()
        collector = _Collector(tree, name, rel, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(), filename=rel))
        found += collector.found
    return Tree(root, tree.modules, tuple(found))


def room_of(module: str) -> str | None:
    """The room a memberpulse module belongs to (None outside memberpulse)."""
    parts = module.split(".")
    if parts[0] != "memberpulse" or len(parts) < 2:
        return None
    if parts[1] in ("models", "export"):
        return parts[1]
    if parts[1] == "streams":
        return parts[2] if len(parts) > 2 else "streams.__init__"
    return parts[1]


# ---------------------------------------------------------------------------------------
# The checks: each returns its findings as readable lines (empty when the rule holds).


def rooms_missing_from_the_table(tree: Tree) -> list[str]:
    """Modules whose room the table does not name (a new room needs a row)."""
    return [
        f"{tree.modules[m].relative_to(tree.root).as_posix()}: room {room_of(m)!r} of {m}"
        for m in tree.modules
        if room_of(m) not in MAY_IMPORT
    ]


def layer_violations(tree: Tree) -> list[str]:
    """Imports of a memberpulse module in a room the importer may not import."""
    found = []
    for imp in tree.imports:
        theirs, mine = room_of(imp.target), room_of(imp.source)
        if theirs is None or mine is None or theirs == mine:
            continue
        if theirs not in MAY_IMPORT.get(mine, frozenset()):
            found.append(f"{imp}  ({mine} → {theirs})")
    return found


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle(graph: Mapping[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start → … → start inside one component (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")  # a component always has one


def cycles(tree: Tree) -> list[str]:
    """Every import cycle between modules, each as a chain with the import of each step."""
    graph: dict[str, set[str]] = {m: set() for m in tree.modules}
    first: dict[tuple[str, str], Import] = {}
    for imp in tree.internal():
        graph[imp.source].add(imp.target)
        first.setdefault((imp.source, imp.target), imp)
    found: list[str] = []
    for component in _strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        seen: set[tuple[str, ...]] = set()
        for start in component:
            chain = _shortest_cycle(graph, start, members)
            pivot = chain.index(min(chain[:-1]))
            key = tuple(chain[pivot:-1] + chain[:pivot])
            if key in seen:
                continue
            seen.add(key)
            ring = [*key, key[0]]
            steps = "\n".join(f"    {first[(a, b)]}" for a, b in pairwise(ring))
            found.append(" → ".join(ring) + "\n" + steps)
    return found


def train_stack_imports(tree: Tree, policy: Literal["never", "in functions"]) -> list[str]:
    """Imports of the train stack that the importer's room's policy forbids."""
    found = []
    for imp in tree.imports:
        room = room_of(imp.source)
        if imp.target.split(".")[0] not in TRAIN_STACK or room is None:
            continue
        if TRAIN_STACK_POLICY.get(room) != policy:
            continue
        if policy == "never" or imp.where == "module":
            found.append(f"{imp}  ({room})")
    return found


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(2, len(parts))]


def train_stack_reached_at_import(tree: Tree) -> list[str]:
    """Modules of streams whose import-time chain of imports reaches the train stack.

    Every room with a policy counts ("in functions" as much as "never": `memberpulse
    --help` must not need torch either). Follows module-level imports only (function
    bodies do not run on import) and, unlike the other checks, the package `__init__`s
    above each imported module too: that is what Python runs when it is imported.
    """
    runs: dict[str, list[Import]] = defaultdict(list)
    for imp in tree.imports:
        if imp.where == "module":
            runs[imp.source].append(imp)
    found = []
    for start in sorted(tree.modules):
        if room_of(start) not in TRAIN_STACK_POLICY:
            continue
        came_by: dict[str, Import | None] = {start: None}
        queue = deque([start])
        hit: Import | None = None
        while queue and hit is None:
            node = queue.popleft()
            for imp in runs[node]:
                if imp.target.split(".")[0] in TRAIN_STACK:
                    hit = imp
                    break
                for nxt in [*_parents(imp.target), imp.target]:
                    if nxt in tree.modules and nxt not in came_by:
                        came_by[nxt] = imp
                        queue.append(nxt)
        if hit is not None:
            chain, node = [hit], hit.source
            while (via := came_by[node]) is not None:
                chain.append(via)
                node = via.source
            steps = "\n".join(f"    {imp}" for imp in reversed(chain))
            found.append(f"{start} imports {hit.target.split('.')[0]} on import:\n{steps}")
    return found


def _report(title: str, findings: list[str]) -> str:
    return f"{title} ({len(findings)}):\n" + "\n".join(f"  {f}" for f in findings)


# ---------------------------------------------------------------------------------------
# The tests on the real tree.

TREE: Final = collect(ROOT)


def test_the_tree_has_modules_and_imports() -> None:
    assert "memberpulse.streams.worker.app" in TREE.modules
    assert "memberpulse.models" in TREE.modules
    assert len(TREE.internal()) > 100


def test_every_module_is_in_a_room_of_the_table() -> None:
    missing = rooms_missing_from_the_table(TREE)
    assert not missing, _report("modules in no room of MAY_IMPORT", missing)


def test_no_import_cycles_between_modules() -> None:
    found = cycles(TREE)
    assert not found, _report("import cycles (function-level and type-only included)", found)


def test_rooms_import_only_their_own_room_and_the_rooms_below() -> None:
    found = layer_violations(TREE)
    assert not found, _report("imports against the layers (see MAY_IMPORT)", found)


def test_torch_free_rooms_never_import_the_train_stack() -> None:
    found = train_stack_imports(TREE, "never")
    assert not found, _report("train-stack imports in rooms that must run without it", found)


def test_cli_local_bench_import_the_train_stack_only_inside_functions() -> None:
    found = train_stack_imports(TREE, "in functions")
    assert not found, _report("module-level train-stack imports in cli/local/bench", found)


def test_importing_streams_modules_does_not_pull_in_the_train_stack() -> None:
    found = train_stack_reached_at_import(TREE)
    assert not found, _report("streams modules that import the train stack on import", found)


# ---------------------------------------------------------------------------------------
# The checker can fail: a tiny synthetic tree with one of each fault.


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_a_cycle_a_layer_violation_and_torch(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "streams/__init__.py": "",
            "streams/state/__init__.py": "",
            "streams/state/store.py": (
                "def later():\n    from memberpulse.streams.worker import processor\n"
            ),
            "streams/worker/__init__.py": "",
            "streams/worker/processor.py": (
                "from typing import TYPE_CHECKING\n"
                "from . import sink\n"
                "import memberpulse.streams.state.store\n"
                "if TYPE_CHECKING:\n    import torch\n"
            ),
            "streams/worker/sink.py": "from .processor import x\n",
            "streams/decisions/__init__.py": "",
            "streams/decisions/churn.py": "from memberpulse.streams.serving.scorer import S\n",
            "streams/serving/__init__.py": "",
            "streams/serving/scorer.py": "from memberpulse.models.network import Net\n",
            "streams/cli/__init__.py": "",
            "streams/cli/train.py": "import torch\n",
            "models/__init__.py": "",
            "models/network.py": "import torch\n",
        },
    )
    tree = collect(tmp_path)

    where = {(i.path, i.target): i.where for i in tree.imports}
    assert where["streams/state/store.py", "memberpulse.streams.worker.processor"] == "function"
    assert where["streams/worker/processor.py", "memberpulse.streams.worker.sink"] == "module"
    assert where["streams/worker/processor.py", "torch"] == "type-only"

    found = cycles(tree)
    assert len(found) == 2
    assert found[0].startswith(
        "memberpulse.streams.state.store → memberpulse.streams.worker.processor → "
        "memberpulse.streams.state.store\n"
        "    streams/state/store.py:2: from memberpulse.streams.worker import processor"
        "  [function]\n"
    )
    assert found[1].startswith(
        "memberpulse.streams.worker.processor → memberpulse.streams.worker.sink → "
        "memberpulse.streams.worker.processor\n"
    )

    assert layer_violations(tree) == [
        "streams/decisions/churn.py:1: from memberpulse.streams.serving.scorer import S"
        "  (decisions → serving)",
        "streams/state/store.py:2: from memberpulse.streams.worker import processor"
        "  [function]  (state → worker)",
    ]
    assert train_stack_imports(tree, "never") == [
        "streams/worker/processor.py:5: import torch  [type-only]  (worker)"
    ]
    assert train_stack_imports(tree, "in functions") == [
        "streams/cli/train.py:1: import torch  (cli)"
    ]
    reached = train_stack_reached_at_import(tree)
    assert [r.splitlines()[0] for r in reached] == [
        "memberpulse.streams.cli.train imports torch on import:",
        "memberpulse.streams.decisions.churn imports torch on import:",
        "memberpulse.streams.serving.scorer imports torch on import:",
    ]
    assert reached[1].splitlines()[1:] == [
        "    streams/decisions/churn.py:1: from memberpulse.streams.serving.scorer import S",
        "    streams/serving/scorer.py:1: from memberpulse.models.network import Net",
        "    models/network.py:1: import torch",
    ]
