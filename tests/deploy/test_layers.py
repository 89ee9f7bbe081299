"""The pipeline package builds and runs pipelines; what a runner needs is attached at the command line's edge."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def runner_imports_outside_main(path: Path) -> list[str]:
    """`runners` imports in `path` that are not inside a function called main."""
    found = []

    def visit(node: ast.AST, in_main: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_main or (isinstance(child, ast.FunctionDef) and child.name == "main")
            names = ([a.name for a in child.names] if isinstance(child, ast.Import)
                     else [child.module or ""] if isinstance(child, ast.ImportFrom) else [])
            if not inside and any(n == "runners" or n.startswith("runners.") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def test_pipelines_import_runners_only_in_main():
    found = [hit for path in sorted((ROOT / "pipelines").glob("*.py")) for hit in runner_imports_outside_main(path)]
    assert found == [], "run()/build_pipeline must work on any runner given plain Beam flags"


def test_one_checkpoint_interval():
    defined = [str(path.relative_to(ROOT)) for path in ROOT.glob("runners/**/*.py")
               if "CHECKPOINT_INTERVAL_MS =" in path.read_text()]
    assert defined == ["runners/checkpoints.py"]
