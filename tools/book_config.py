"""Write the Jupyter Book config for one build and print its path.

Jupyter Book caches executed notebooks keyed by their code alone. A chapter's
output also depends on the run mode (SPECTRAL_LAB_MODE: a quick figure must
never be shown as a full one) and on the package it imports. This script
copies ``_config.yml`` to ``_build/config/<mode>-<package hash>.yml`` with the
execution cache pointed at a folder of the same name, so a change of mode or
of any file in ``spectral_lab/`` (or ``pyproject.toml``) starts a fresh cache,
and an unchanged tree reuses the last results.

Usage (the Makefile does this): jupyter-book build . --config "$(python tools/book_config.py)"

``python tools/book_config.py --seed-cache DIR`` first puts the notebooks that nbval executed
and kept in ``DIR`` (see the repository's ``conftest.py``) into that cache, so that ``make test``
executes every chapter once: nbval runs it, the build renders what nbval saw.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def package_hash() -> str:
    digest = hashlib.sha256()
    files = sorted((ROOT / "spectral_lab").rglob("*.py")) + [ROOT / "pyproject.toml"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def seed_cache(cache_path: Path, folder: Path) -> int:
    """Cache each executed notebook in ``folder`` whose source is unchanged; return the count."""
    import json

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(cache_path))
    seeded = 0
    for executed in sorted(folder.rglob("*.ipynb")):
        info = json.loads(executed.with_suffix(".json").read_text())
        source = ROOT / info["source"]
        nb = nbformat.read(str(executed), as_version=4)
        original = nbformat.read(str(source), as_version=4)
        code = [c.source for c in original.cells if c.cell_type == "code"]
        if code != [c.source for c in nb.cells if c.cell_type == "code"]:
            continue  # the chapter changed since nbval ran it: the build executes it
        for cell, kept in zip(original.cells, nb.cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = kept.outputs, kept.execution_count
        bundle = CacheBundleIn(original, str(source), data={"execution_seconds": info["seconds"]})
        cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
        seeded += 1
    return seeded


def main() -> int:
    mode = os.environ.get("SPECTRAL_LAB_MODE", "").strip().lower() or "auto"
    if mode not in ("quick", "full", "auto"):
        print(f"SPECTRAL_LAB_MODE must be quick or full, got {mode!r}", file=sys.stderr)
        return 2
    key = f"{mode}-{package_hash()}"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    execute = config.setdefault("execute", {})
    execute["execute_notebooks"] = "cache"
    execute["cache"] = str(ROOT / "_build" / "jupyter_cache" / key)
    out = ROOT / "_build" / "config" / f"{key}.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    if len(sys.argv) == 3 and sys.argv[1] == "--seed-cache":
        seeded = seed_cache(Path(execute["cache"]), Path(sys.argv[2]))
        print(f"{seeded} executed notebooks from nbval put in the build's cache", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
