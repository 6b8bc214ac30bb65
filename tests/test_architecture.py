"""The package's structure: no import cycle between its files (lazy imports inside functions count)."""

from __future__ import annotations

import inspect

import grimp


def _cycles(graph, modules) -> list[list[str]]:
    """Strongly connected components of more than one module. A package's import of its own
    submodules (its ``__init__`` gathering them) is not counted: only those edges would close a
    cycle with a submodule that imports a name from its package."""
    edges = {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules and not i.startswith(m + ".")}
        for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_between_files():
    graph = grimp.build_graph("pluralign")
    cycles = _cycles(graph, set(graph.modules))
    assert cycles == [], "import cycles (each a set of modules importing each other):\n" + "\n".join(map(str, cycles))


def test_the_cycle_check_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(m)
    graph.add_import(importer="pkg", imported="pkg.a")  # a package gathering its submodule: not a cycle
    graph.add_import(importer="pkg.a", imported="pkg")
    assert _cycles(graph, set(graph.modules)) == []
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.b")
    assert _cycles(graph, set(graph.modules)) == [["pkg.b", "pkg.c"]]


def test_train_flags_default_to_train_config():
    """``pluralign train``'s flags are TrainConfig's fields with its defaults (or None: unset, the
    default then comes from TrainConfig or is computed), which the --config check relies on."""
    from pluralign.cli.train import train_cmd
    from pluralign.training import TrainConfig

    from pluralign._fields import settings

    fields = {s.name: s for s in settings(TrainConfig)}  # nested blocks (grpo) by their flat names, grpo_beta
    for name, p in inspect.signature(train_cmd).parameters.items():
        if name == "config":
            continue
        assert name in fields, name
        d = p.default.default
        cfg_default = fields[name].default
        assert d is None or d == cfg_default or str(d) == str(cfg_default), (name, d, cfg_default)
