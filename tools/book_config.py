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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edition", default="instructor", choices=EDITIONS)
    parser.add_argument("--no-execute", action="store_true")
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
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
