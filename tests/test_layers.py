"""The import graph points down: entry points → (ingest job, Serve app, evaluation) → the shared package. Every
import counts, a lazy one inside a function too."""

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


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {n.split(".")[0] for n in names} & set(ALLOWED)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package):
    modules = sorted((REPO / package).glob("*.py"))
    assert modules
    wrong = {m.name: project_imports(m) - ALLOWED[package] for m in modules}
    assert {name: bad for name, bad in wrong.items() if bad} == {}


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
