"""The package's layering, read from the source with `ast`: no import cycles, a pure core.

Dependencies point one way: cli -> service -> cluster, quic -> engines -> core; devnet -> quic, core. The
core imports no I/O or JIT library; imports inside functions exist only to defer Numba and Dask.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "quantus_miner"
IMPURE = {"trio", "quart", "quart_trio", "hypercorn", "numba", "llvmlite", "numpy", "prometheus_client", "httpx",
          "werkzeug", "socket", "asyncio", "threading", "subprocess", "aioquic", "cryptography", "ssl", "distributed",
          "dask"}
LAYERS = ["core", "engines", "pipeline", "cluster", "quic", "service", "devnet", "cli"]  # a layer imports only earlier ones
# quic/ (issue 14) is the trio + aioquic transport of the 2026 node protocol: it needs only the pure
# wire format (core.quic_messages), so it sits beside engines; service drives the runtime from it
# (service.node_client), and the devnet's QUIC node simulator serves through it. cluster/ (issue 13)
# runs engines on Dask workers; service feeds it.
# pipeline/ (issue 18) is the one job pipeline: the runtime, the executor interface, the chunk loop and
# the local executor; the cluster executor is one of its executors, the service composes it.
ALLOWED = {"core": set(), "engines": {"core"}, "pipeline": {"core", "engines"},
           "cluster": {"core", "engines", "pipeline"}, "quic": {"core"},
           "service": {"core", "engines", "pipeline", "cluster", "quic"}, "devnet": {"core", "quic"},
           "cli": {"core", "engines", "pipeline", "cluster", "quic", "service", "devnet"}}
# Numba engines; Dask (never loaded in local mode)
DEFERRED = {"quantus_miner.engines.fast", "quantus_miner.engines.fast_v2", "distributed", "quantus_miner.cluster.worker",
            # numba-cuda (the optional gpu extra) and the GPU engine modules that import it
            "numba", "numba.cuda.dispatcher", "quantus_miner.engines.gpu", "quantus_miner.engines.gpu.engine",
            "quantus_miner.engines.gpu.kernels"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, whether the import sits inside a function) for every import."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in in_function) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # `from . import x` may name a submodule: record it when one exists
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, id(node) in in_function))
    return out


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def own(target: str) -> bool:
    return target == "quantus_miner" or target.startswith("quantus_miner.")


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in a directed graph as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (cycle := visit(t, path + [t])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m, [m])):
            return cycle
    return None


def test_no_import_cycles_between_the_package_modules():
    edges = {m: {t for t, _ in deps if own(t) and t in MODULES and t != m} for m, deps in GRAPH.items()}
    # a package's __init__ is imported before its modules; an edge to a parent package is not a cycle
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    assert find_cycle(edges) is None, "import cycle: " + " -> ".join(find_cycle(edges))


def test_core_imports_no_io_or_jit_library():
    for module, deps in GRAPH.items():
        if layer(module) == "core":
            bad = sorted({t for t, _ in deps if t.split(".")[0] in IMPURE})
            assert not bad, f"{module} imports {bad}"


def test_layers_depend_one_way():
    for module, deps in GRAPH.items():
        mine = layer(module)
        if mine is None:
            continue
        for target, _ in deps:
            theirs = layer(target) if own(target) else None
            if theirs and theirs != mine:
                assert theirs in ALLOWED[mine], f"{module} ({mine}) imports {target} ({theirs})"




def test_imports_inside_functions_only_defer_numba_and_dask():
    for module, deps in GRAPH.items():
        for target, inside in deps:
            if inside:
                assert target in DEFERRED, f"{module} imports {target} inside a function"


def test_the_checker_finds_cycles_and_reads_imports():
    # the checks above can fail: a cycle is found, and real imports (relative ones too) are read
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    runtime = {t for t, _ in GRAPH["quantus_miner.pipeline.runtime"]}
    assert {"trio", "quantus_miner.core.jobs", "quantus_miner.pipeline.executor"} <= runtime
    assert "prometheus_client" in reach("quantus_miner.service.metrics")  # the reach below can see it


def reach(module: str) -> set[str]:
    """Every module `module` imports at import time, directly or through others (and their packages)."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        for target, inside in GRAPH.get(m, ()):
            if inside:
                continue
            parts = target.split(".")
            for n in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                t = ".".join(parts[:n])
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
    return seen


def test_the_runtime_knows_nothing_of_prometheus():
    # metrics are pulled (issue 18): the module defining the runtime reaches no prometheus_client
    assert "prometheus_client" not in reach("quantus_miner.pipeline.runtime")


def test_the_512_bit_bound_is_assigned_once():
    # issue 18: core/qpow.MAX_U512 is the one definition; everything else imports it
    pattern = ("(1 << 512) - 1", "2 ** 512 - 1", "2**512 - 1", "(1<<512)-1")
    sites = [f"{p.relative_to(PACKAGE)}:{node.lineno}" for p in FILES if p.name != "_generated_kernels.py"
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Assign) and ast.unparse(node.value).replace(" ", "") in
             {x.replace(" ", "") for x in pattern}]
    assert sites == ["core/qpow.py:" + sites[0].split(":")[1]] and len(sites) == 1, sites



def undocumented_in(tree: ast.AST, prefix: str = "") -> list[str]:
    """`line name` of each public class and function (methods too) of `tree` without a docstring."""
    missing = []
    for n in ast.iter_child_nodes(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_"):
            if ast.get_docstring(n) is None:
                missing.append(f"{n.lineno} {prefix}{n.name}")
            if isinstance(n, ast.ClassDef):
                missing += undocumented_in(n, f"{prefix}{n.name}.")
    return missing


def test_the_core_and_the_service_document_every_public_definition():
    # issue 18: the sans-I/O core and the service shell (the runtime's front ends) are read first
    missing = [f"{p.relative_to(PACKAGE)}:{m}" for p in FILES if layer(module_name(p)) in ("core", "service")
               for m in undocumented_in(ast.parse(p.read_text()))]
    assert missing == []
    # the checker can fail
    assert undocumented_in(ast.parse("class A:\n    def f(self): pass\n    def _g(self): pass\n")) == ["1 A", "2 A.f"]
