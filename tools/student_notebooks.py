"""Write every chapter as a student notebook: solutions out, an empty TODO cell in their place.

Usage: python tools/student_notebooks.py OUT_DIR   (``make student-notebooks``)

For each ``book/<chapter>.ipynb`` the notebook in ``OUT_DIR`` has the same cells without
outputs; every solution (a ``{solution}`` directive, or an ``{admonition}`` titled "Solution"
in a chapter not yet converted, and every code cell tagged ``solution``) is removed, and a code
cell ``# TODO: your solution`` follows the cell that held it. Exercises stay as they are.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_sources import ROOT, split_solutions  # noqa: E402


def todo_cell(what: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": ["student-todo"]},
        "outputs": [],
        "source": [f"# TODO: your solution to {what}\n"],
    }


def student_notebook(notebook: dict) -> dict:
    """A copy of ``notebook`` with solutions replaced by TODO cells and outputs cleared."""
    out = copy.deepcopy(notebook)
    cells, count = [], 0
    for cell in out["cells"]:
        if cell["cell_type"] == "code":
            if "solution" in cell.get("metadata", {}).get("tags", []):
                count += 1
                cells.append(todo_cell("the exercise above"))
                continue
            cell["outputs"], cell["execution_count"] = [], None
            cells.append(cell)
            continue
        if cell["cell_type"] != "markdown":
            cells.append(cell)
            continue
        text, solutions = split_solutions("".join(cell["source"]))
        if not solutions:
            cells.append(cell)
            continue
        cell["source"] = text.splitlines(keepends=True)
        cells.append(cell)
        for _ in solutions:
            count += 1
            cells.append(todo_cell(f"exercise {count} of this chapter"))
    out["cells"] = cells
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    from spectral_lab.files import atomic_write

    out_dir = Path(argv[0])
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        notebook = student_notebook(json.loads(path.read_text()))
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        atomic_write(out_dir / path.name, lambda handle, text=text: handle.write(text.encode()))
        print(out_dir / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
