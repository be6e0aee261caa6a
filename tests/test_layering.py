"""The layering of app/, read from the source: no import cycle between its packages, the kit
below every domain, and transactions opened and committed only where app.kit.db says."""

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
# What the kit may import besides itself: the layer below every domain.
KIT_MAY_IMPORT = {"config", "gateway"}
# Where a unit of work may be committed (see app.kit.db): the unit itself, the two-phase
# payment before it charges a card, and the login throttle that counts an attempt whatever
# the request answers.
MAY_COMMIT = {"kit/db.py", "kit/payments.py", "auth/throttle.py"}
# Opening a transaction, a connection, an engine or a session factory: app.kit.db's alone.
OPENS_TRANSACTIONS = {"kit/db.py"}
_BEGIN = {"begin", "begin_nested"}
_OPENING_FACTORIES = {"async_sessionmaker", "sessionmaker", "create_async_engine", "create_pool"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    """Every module of app/, as its path under app/ and its syntax tree."""
    for path in sorted(APP.rglob("*.py")):
        yield path.relative_to(APP).as_posix(), ast.parse(path.read_text(), str(path))


def _unit(module: str) -> str | None:
    """The top-level package or module of app that `module` belongs to: app.kit.db -> kit."""
    parts = module.split(".")
    return parts[1] if parts[0] == "app" and len(parts) > 1 else None


def _imported(tree: ast.Module, package: str) -> Iterator[tuple[str, int]]:
    """The modules of app a module imports (at any depth, even inside a function), with the
    line; `package` is the module's own package, for relative imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "app":  # `from app import accounts`
                for alias in node.names:
                    yield f"app.{alias.name}", node.lineno
            else:
                yield module, node.lineno


def import_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> where (`path:line`), for imports between different units."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path, tree in _modules():
        module = "app." + path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        source = _unit(module)
        if source is None:  # app/__init__.py
            continue
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        edges = graph.setdefault(source, {})
        for imported, line in _imported(tree, package):
            target = _unit(imported)
            if target is not None and target != source:
                edges.setdefault(target, []).append(f"app/{path}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the graph as the units along it (the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> list[str] | None:
        if unit in path:
            return [*path[path.index(unit) :], unit]
        if unit in done:
            return None
        for target in sorted(graph.get(unit, {})):
            cycle = visit(target, [*path, unit])
            if cycle is not None:
                return cycle
        done.add(unit)
        return None

    for unit in sorted(graph):
        cycle = visit(unit, [])
        if cycle is not None:
            return cycle
    return None


def test_the_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}, "d": {"a": ["w"]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["x"]}, "b": {}, "c": {"a": ["y"]}}) is None


def test_the_packages_of_app_import_each_other_without_a_cycle() -> None:
    graph = import_graph()
    assert {"accounts", "auth", "kit", "orders", "main"} <= set(graph)  # the walk saw them
    cycle = find_cycle(graph)
    if cycle is not None:
        where = [
            f"  {source} -> {target}: {', '.join(graph[source][target])}"
            for source, target in itertools.pairwise(cycle)
        ]
        raise AssertionError(
            f"import cycle between packages of app: {' -> '.join(cycle)}\n" + "\n".join(where)
        )


def test_the_kit_imports_no_domain() -> None:
    imported = import_graph()["kit"]
    assert set(imported) <= KIT_MAY_IMPORT, {
        target: where for target, where in imported.items() if target not in KIT_MAY_IMPORT
    }


def _calls(tree: ast.Module) -> Iterator[tuple[int, str, str | None]]:
    """Every call in a module: its line, the name called, and what it is called on (the
    source text of `x` in `x.name(...)`; None for a plain `name(...)`)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute):
            yield node.lineno, node.func.attr, ast.unparse(node.func.value)
        elif isinstance(node.func, ast.Name):
            yield node.lineno, node.func.id, None


def _opens(name: str, receiver: str | None) -> bool:
    if name in _OPENING_FACTORIES:
        return True
    if receiver is None:
        return False
    # session.begin(), engine.begin(), connection.begin(); engine.connect(), asyncpg.connect().
    return name in _BEGIN or (name == "connect" and ("engine" in receiver or receiver == "asyncpg"))


def test_only_the_unit_of_work_opens_transactions_and_connections() -> None:
    found = [
        f"app/{path}:{line}: {receiver + '.' if receiver else ''}{name}("
        for path, tree in _modules()
        if path not in OPENS_TRANSACTIONS
        for line, name, receiver in _calls(tree)
        if _opens(name, receiver)
    ]
    assert not found, "open transactions through app.kit.db's Database.run:\n" + "\n".join(found)


def test_commits_happen_only_where_the_unit_of_work_allows_them() -> None:
    found = [
        f"app/{path}:{line}: {receiver}.commit()"
        for path, tree in _modules()
        if path not in MAY_COMMIT
        for line, name, receiver in _calls(tree)
        if name == "commit" and receiver is not None
    ]
    assert not found, "services flush and Database.run commits (app.kit.db):\n" + "\n".join(found)
