"""Keep what nbval executed, so that `make test` runs every chapter once, not twice.

nbval executes each notebook cell by cell and checks it. With ``SPECTRAL_LAB_KEEP_EXECUTED`` set
to a folder, every notebook whose cells all passed is written there with the outputs nbval saw
(and its wall time), and ``tools/book_config.py --seed-cache`` puts those notebooks into the book
build's execution cache: the build then renders them instead of executing them again. A notebook
with a failing or skipped cell is not kept, so the build executes (and reports) it itself.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

KEEP_ENV = "SPECTRAL_LAB_KEEP_EXECUTED"
_started: dict[str, float] = {}
_outcome: dict[str, list] = {}


def _notebook_item(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def pytest_runtest_setup(item):
    if _notebook_item(item):
        _started.setdefault(str(item.parent.fspath), time.perf_counter())


def pytest_runtest_logreport(report):
    if report.when == "call" and "::Cell " in report.nodeid:
        path = report.nodeid.split("::")[0]
        _outcome.setdefault(path, []).append(report.passed)


def pytest_sessionfinish(session):
    folder = os.environ.get(KEEP_ENV)
    if not folder:
        return
    # here, not at the top: a run without nbval (the gpu tests on a GPU machine) lacks nbformat
    import nbformat

    cells: dict[str, list] = {}
    for item in session.items:
        if _notebook_item(item):
            cells.setdefault(str(item.parent.fspath), []).append(item)
    for path, items in cells.items():
        rel = os.path.relpath(path, session.config.rootpath)
        results = _outcome.get(rel, [])
        if len(results) != len(items) or not all(results):
            continue  # not every cell ran and passed: let the book build execute this one
        # the notebook as nbval read it: if the file changed since, the cache check sees it
        nb = copy.deepcopy(items[0].parent.nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        for count, (cell, item) in enumerate(zip(code, items), start=1):
            cell.outputs = item.test_outputs or []
            cell.execution_count = count
            for output in cell.outputs:
                if output.get("output_type") == "execute_result":
                    output["execution_count"] = count
        out = Path(folder) / Path(rel).with_suffix(".ipynb")
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(out))
        seconds = time.perf_counter() - _started.get(path, time.perf_counter())
        out.with_suffix(".json").write_text(json.dumps({"source": rel, "seconds": seconds}))
