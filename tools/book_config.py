"""Write the Jupyter Book config for one build and print its path.

Jupyter Book caches executed notebooks keyed by their code alone. A chapter's
output also depends on the run mode (SPECTRAL_LAB_MODE: a quick figure must
never be shown as a full one) and on the package it imports. This script
copies ``_config.yml`` to ``_build/config/<mode>-<package hash>.yml`` with the
execution cache pointed at a folder of the same name, so a change of mode or
of any file in ``spectral_lab/`` (or ``pyproject.toml``) starts a fresh cache,
and an unchanged tree reuses the last results.

It also chooses the edition: ``--edition instructor`` (the default) keeps the solutions,
``--edition student`` hides every ``{solution}`` (sphinx-exercise's ``hide_solutions``), from
the same sources. ``--no-execute`` builds from the notebooks as they are, without running them
(for checks of the book's infrastructure, not for publishing). Paths the config names relative to
the repository (``local_extensions``) are made absolute, since the copy lives elsewhere.

Usage (the Makefile does this):
    jupyter-book build . --config "$(python tools/book_config.py --edition student)"

``--seed-cache DIR`` first puts the notebooks that nbval executed and kept in ``DIR`` (see the
repository's ``conftest.py``) into that cache, so that ``make test`` executes every chapter once:
nbval runs it, the build renders what nbval saw.
"""

from __future__ import annotations

import argparse
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


EDITIONS = ("instructor", "student")


def book_config(edition: str = "instructor", execute: bool = True, key: str = "") -> dict:
    """``_config.yml`` for one edition, with local paths made absolute and the execution cache at
    ``_build/jupyter_cache/<key>`` (or execution off)."""
    if edition not in EDITIONS:
        raise ValueError(f"the edition is one of {EDITIONS}, got {edition!r}")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    execution = config.setdefault("execute", {})
    if execute:
        execution["execute_notebooks"] = "cache"
        execution["cache"] = str(ROOT / "_build" / "jupyter_cache" / key)
    else:
        execution["execute_notebooks"] = "off"
    sphinx = config.setdefault("sphinx", {})
    local = sphinx.get("local_extensions") or {}
    sphinx["local_extensions"] = {name: str(ROOT / path) for name, path in local.items()}
    sphinx.setdefault("config", {})["hide_solutions"] = edition == "student"
    return config


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edition", default="instructor", choices=EDITIONS)
    parser.add_argument("--no-execute", action="store_true")
    parser.add_argument("--seed-cache", metavar="DIR", help="notebooks nbval executed and kept")
    args = parser.parse_args(argv)
    mode = os.environ.get("SPECTRAL_LAB_MODE", "").strip().lower() or "auto"
    if mode not in ("quick", "full", "auto"):
        print(f"SPECTRAL_LAB_MODE must be quick or full, got {mode!r}", file=sys.stderr)
        return 2
    key = f"{mode}-{package_hash()}"
    config = book_config(args.edition, execute=not args.no_execute, key=key)
    name = key if not args.no_execute else "no-execute"
    out = ROOT / "_build" / "config" / f"{name}-{args.edition}.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    if args.seed_cache and not args.no_execute:
        cache = Path(config["execute"]["cache"])
        seeded = seed_cache(cache, Path(args.seed_cache))
        print(f"{seeded} executed notebooks from nbval put in the build's cache", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
