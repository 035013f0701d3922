"""Write the project's home (``pyproject.toml`` ``[project.urls] Repository``) into every copy.

The address is declared once, in ``pyproject.toml``. Copies live in ``_config.yml``
(``repository.url``, from which Jupyter Book derives the launch, repository and issue buttons),
in ``CITATION.cff`` (``repository-code``) and in the first code cell of every chapter (the install
cell, which Colab runs). This script rewrites all of them from the declaration;
``tests/test_book.py`` fails when any copy disagrees.

Usage, from the repository root::

    python tools/sync_home.py          # rewrite the copies
    python tools/sync_home.py --check  # only report copies that disagree (exit 1 if any)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

# The extras a chapter needs beyond the package itself, and a module that proves each is installed.
CHAPTER_EXTRAS = {
    "track_your_model": {
        "lightning": "lightning",
        "hf": "transformers",
        "tensorboard": "tensorboard",
    }
}

QUICK_MODE_LINES = """\
# The book runs every experiment at its quick (CPU-sized) scale, also on a GPU runtime. For the
# paper's scale (hours on a GPU) set SPECTRAL_LAB_MODE=full before starting Jupyter, or here.
os.environ.setdefault("SPECTRAL_LAB_MODE", "quick")
"""

INSTALL_CELL = """\
# Colab or a fresh environment: install spectral_lab from its repository if it is missing.
# Where it is installed (a clone with `pip install -e ".[book]"`), this cell changes nothing.
import importlib
import os
import subprocess
import sys

{quick}
HOME = "{home}"  # pyproject.toml [project.urls]
try:
    import spectral_lab  # noqa: F401
except ImportError:
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "spectral-lab @ git+" + HOME]
    if subprocess.run(pip).returncode != 0:
        raise RuntimeError(
            f"Installing spectral-lab from {{HOME}} failed (pip's message is above). Check the "
            "network and run this cell again, or clone the repository and run "
            '`pip install -e ".[book]"` in it.'
        ) from None
    importlib.invalidate_caches()
    import spectral_lab  # noqa: F401
"""

INSTALL_CELL_WITH_EXTRAS = """\
# Colab or a fresh environment: install spectral_lab with the extras this chapter uses
# from its repository if it is missing. A local install is never replaced: if only an
# extra is missing, this cell stops and names it.
import importlib
import importlib.util
import os
import subprocess
import sys

{quick}
HOME = "{home}"  # pyproject.toml [project.urls]
# Each extra, and a module that shows it is installed:
EXTRAS = {modules}
try:
    import spectral_lab  # noqa: F401
except ImportError:
    requirement = "spectral-lab[{extras}] @ git+" + HOME
    pip = [sys.executable, "-m", "pip", "install", "--quiet", requirement]
    if subprocess.run(pip).returncode != 0:
        raise RuntimeError(
            f"Installing spectral-lab from {{HOME}} failed (pip's message is above). Check the "
            "network and run this cell again, or clone the repository and run "
            '`pip install -e ".[book,{extras}]"` in it.'
        ) from None
    importlib.invalidate_caches()
    import spectral_lab  # noqa: F401
missing = [extra for extra, module in EXTRAS.items() if importlib.util.find_spec(module) is None]
if missing:
    extras = ",".join(missing)
    raise RuntimeError(
        f"This chapter needs the spectral-lab extras [{{extras}}]. In a clone: "
        f'pip install -e ".[{{extras}}]"; else: '
        f'pip install "spectral-lab[{{extras}}] @ git+{{HOME}}"'
    )
"""


def declared_home(root: Path = ROOT) -> str:
    """The ``Repository`` address of ``[project.urls]`` in ``pyproject.toml``, without a slash."""
    text = (root / "pyproject.toml").read_text()
    try:
        import tomllib

        urls = tomllib.loads(text).get("project", {}).get("urls", {})
        home = urls.get("Repository", "")
    except ImportError:  # Python 3.10: the one line is enough
        section = text.split("[project.urls]", 1)[-1].split("\n[", 1)[0]
        match = re.search(r'^Repository\s*=\s*"([^"]+)"', section, re.M)
        home = match.group(1) if match else ""
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", home.rstrip("/")):
        raise ValueError(
            'pyproject.toml needs [project.urls] Repository = "https://github.com/OWNER/NAME", '
            f"got {home!r}"
        )
    return home.rstrip("/")


def install_cell(chapter: str, home: str) -> str:
    """The exact source of the first code cell of ``book/<chapter>.ipynb``."""
    quick = QUICK_MODE_LINES.rstrip("\n")
    modules = CHAPTER_EXTRAS.get(chapter)
    if modules is None:
        return INSTALL_CELL.format(home=home, quick=quick).rstrip("\n")
    return INSTALL_CELL_WITH_EXTRAS.format(
        home=home, quick=quick, modules=json.dumps(modules), extras=",".join(modules)
    ).rstrip("\n")


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("*.ipynb"))


def _first_code_cell(notebook: dict) -> dict:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            return cell
    raise ValueError("a chapter without a code cell has no install cell")


def _config_text(text: str, home: str) -> str:
    """``_config.yml`` with ``repository: url:`` set to ``home`` (comments and layout kept)."""
    new, count = re.subn(
        r"(^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:[ \t]*)(\S+)",
        rf"\g<1>{home}",
        text,
        flags=re.M,
    )
    if count != 1:
        raise ValueError("_config.yml has no `repository: url:` entry to set")
    return new


def _citation_text(text: str, home: str) -> str:
    new, count = re.subn(
        r'^(repository-code:[ \t]*)"?[^"\n]*"?', rf'\g<1>"{home}"', text, flags=re.M
    )
    if count != 1:
        raise ValueError("CITATION.cff has no `repository-code:` entry to set")
    return new


def disagreements(root: Path = ROOT) -> list[str]:
    """Every copy of the home that differs from the declaration, as 'path: what is wrong'."""
    home = declared_home(root)
    problems = []
    config = (root / "_config.yml").read_text()
    if _config_text(config, home) != config:
        problems.append(f"_config.yml: repository.url is not {home}")
    citation = (root / "CITATION.cff").read_text()
    if _citation_text(citation, home) != citation:
        problems.append(f"CITATION.cff: repository-code is not {home}")
    for path in chapters(root):
        cell = _first_code_cell(json.loads(path.read_text()))
        if "".join(cell["source"]) != install_cell(path.stem, home):
            problems.append(f"book/{path.name}: the install cell differs from tools/sync_home.py's")
    return problems


def sync(root: Path = ROOT) -> list[str]:
    """Rewrite every copy from the declaration; returns the files that changed."""
    from spectral_lab.files import atomic_write  # only the writer needs the package

    home = declared_home(root)
    changed = []

    def write(path: Path, text: str) -> None:
        if path.read_text() != text:
            atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
            changed.append(str(path.relative_to(root)))

    write(root / "_config.yml", _config_text((root / "_config.yml").read_text(), home))
    write(root / "CITATION.cff", _citation_text((root / "CITATION.cff").read_text(), home))
    for path in chapters(root):
        notebook = json.loads(path.read_text())
        cell = _first_code_cell(notebook)
        lines = install_cell(path.stem, home).splitlines(keepends=True)
        cell["source"] = lines
        write(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return changed


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        problems = disagreements()
        print("\n".join(problems) or "every copy of the home agrees with pyproject.toml")
        return 1 if problems else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(sync()) or "nothing to change")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
