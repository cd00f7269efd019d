"""The import graph points down: entry points → (ingest job, Serve app, evaluation) → the shared package, and has
no cycle. Every import counts, a lazy one inside a function or one for type checking too."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED, PATHS, TOP = "rag", ("ingest_jobs", "serve_app", "evaluation"), "entrypoints"
# What each package may import of the project's own; evaluation scores the ingest job's output and reuses its
# reader and parser for its question sets, the one sideways arrow.
ALLOWED = {
    SHARED: {SHARED},
    "ingest_jobs": {SHARED, "ingest_jobs"},
    "serve_app": {SHARED, "serve_app"},
    "evaluation": {SHARED, "evaluation", "ingest_jobs"},
    TOP: {SHARED, *PATHS, TOP},
}


def imported_modules(path: Path) -> set[str]:
    """The project modules a module imports, at any depth of its code: ``from a.b import c`` names ``a.b.c`` when
    that is a module of the project, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{a.name}" for a in node.names]
            names = [m for m in submodules if module_path(m) is not None] or [node.module]
        found |= {n for n in names if n.split(".")[0] in ALLOWED}
    return found


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports."""
    return {name.split(".")[0] for name in imported_modules(path)}


def module_path(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> list[Path]:
    return sorted(p for package in ALLOWED for p in (REPO / package).rglob("*.py"))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (or a module importing itself), by Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package):
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules
    wrong = {str(m.relative_to(REPO)): project_imports(m) - ALLOWED[package] for m in modules}
    assert {name: bad for name, bad in wrong.items() if bad} == {}


def test_no_module_takes_part_in_an_import_cycle():
    graph = {module_name(p): imported_modules(p) for p in project_modules()}
    assert len(graph) > 40
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_type_checking_import(tmp_path):
    graph = {module_name(p): imported_modules(p) for p in project_modules()}
    graph["ingest_jobs.summary"] = graph["ingest_jobs.summary"] | {"ingest_jobs.metrics"}  # metrics imports summary
    assert import_cycles(graph) == [["ingest_jobs.metrics", "ingest_jobs.summary"]]
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ingest_jobs.ingest import run_ingest\n"
    )
    assert imported_modules(module) == {"ingest_jobs.ingest"}


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from serve_app.app import build_app\n")
    assert project_imports(module) - ALLOWED[SHARED] == {"serve_app"}


def loaded_modules(imports: str, packages: tuple[str, ...]) -> list[str]:
    """The modules whose names start with one of ``packages`` that a fresh interpreter holds after importing
    ``imports``."""
    found = f"sorted(m for m in sys.modules if m.startswith({packages!r}))"
    code = f"import json, sys, {imports}; print(json.dumps({found}))"
    ran = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(ran.stdout)


def test_the_prompt_builder_and_rag_eval_load_neither_vllm_nor_ray_serve():
    assert loaded_modules("serve_app.prompt, rag.search, evaluation.cli", ("vllm", "ray.serve")) == []


def test_the_embedder_and_retriever_shells_load_neither_vllm_nor_torch():
    # A replica imports its shell's whole module: vLLM there would cost each of them ~20 s of start-up and its memory.
    assert loaded_modules("serve_app.deployments", ("vllm", "torch", "transformers")) == []
