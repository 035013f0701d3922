"""Write the Jupyter Book config for one build and print its path.

Jupyter Book caches executed notebooks keyed by their code alone. A chapter's
output also depends on the run mode (SPECTRAL_LAB_MODE: a quick figure must
never be shown as a full one) and on the package it imports. This script
copies ``_config.yml`` to ``_build/config/<mode>-<package hash>.yml`` with the
execution cache pointed at a folder of the same name, so a change of mode or
of any file in ``spectral_lab/`` (or ``pyproject.toml``) starts a fresh cache,
and an unchanged tree reuses the last results.

Usage (the Makefile does this): jupyter-book build . --config "$(python tools/book_config.py)"
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
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
