"""The package's floor plan: three wings, imports only pointing to the wing above, no circles.

The lens (what readers reuse on their own models) imports nothing from the run kit or the
chapters; the run kit imports nothing from the chapters; no two modules import each other,
directly or around a longer circle. Read from the source with ``ast``, so a lazy import inside
a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spectral_lab"

LENS = {
    "spectra",
    "bidiagonal",
    "gram",
    "lapack",
    "views",
    "tracker",
    "record",
    "pruning",
    "plotting",
    "widgets",
    "runtime",
    "files",
    "locks",
    "heavy_tail",
    "checkpoints",
    "version",
    "curves",
    "curvature",
    "integrations",
}
KIT = {"config", "sweeps", "data", "models", "bookkeeping"}
FACE = {"__init__", "__main__", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "face"
    top = parts[1]
    if top in FACE:
        return "face"
    if top in LENS:
        return "lens"
    if top in KIT:
        return "kit"
    if top == "experiments":
        return "chapters"
    raise AssertionError(f"{module} is in no wing: add it to LENS, KIT or experiments/")


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports (resolved relative imports; ``from . import x`` names
    the submodule ``x`` when it exists)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("spectral_lab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("spectral_lab"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                sub_path = PACKAGE.parent / Path(*sub.split("."))
                found.add(
                    sub if sub_path.with_suffix(".py").exists() or sub_path.is_dir() else target
                )
    found.discard(here)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}


def test_every_module_is_in_a_wing():
    for module in graph():
        wing(module)


@pytest.mark.parametrize(
    "low, high", [("lens", "kit"), ("lens", "chapters"), ("lens", "face"), ("kit", "chapters")]
)
def test_no_wing_imports_a_wing_above_it(low, high):
    upward = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if wing(module) == low
        for target in targets
        if wing(target) == high and module != "spectral_lab"
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = graph()
    # the package's own __init__ imports its submodules, which import the package implicitly
    # when Python loads them; that is not an import in the source, so it is not an edge here
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in edges[node]:
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_a_chapter_module_is_named_like_its_chapter():
    chapters = {p.stem for p in (PACKAGE.parent / "book").glob("*.ipynb")}
    modules = {p.stem for p in (PACKAGE / "experiments").glob("*.py")} - {"__init__"}
    # modules shared by chapters (shipped: the run records of the chapters' other seeds), and
    # chapter files named differently from their module
    shared = {"classifier", "interpolation", "shipped"}
    named = {"lottery_tickets": "lottery"}
    for chapter in chapters:
        expected = named.get(chapter, chapter)
        if expected in {"toolkit", "track_your_model", "checkpoints"}:
            continue  # chapters of the lens: no experiment module of their own
        assert expected in modules, (
            f"book/{chapter}.ipynb has no spectral_lab/experiments/{expected}.py"
        )
    assert modules - shared <= {named.get(c, c) for c in chapters}


def test_the_cli_alone_knows_every_experiment():
    """In a fresh interpreter, importing the command line is enough: no chapter registers itself."""
    code = "import spectral_lab.cli as cli; print(','.join(sorted(cli.EXPERIMENTS)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out.split(",") == sorted(
        [
            "arch_convnet",
            "arch_lstm",
            "arch_transformer",
            "arch_unet",
            "connectivity",
            "grokking",
            "memorization",
            "weight_decay",
        ]
    )


@pytest.mark.parametrize(
    "script", sorted((PACKAGE.parent / "benchmarks").glob("*.py")), ids=lambda path: path.name
)
def test_every_benchmark_imports_what_the_package_has(script):
    """A benchmark is run by hand, so a moved name would break it unseen: import each in a fresh
    interpreter (its main() does not run)."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('benchmark', {str(script)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
