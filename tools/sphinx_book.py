"""A Sphinx extension for the book: MathJax served from the build, and search that finds stems.

Loaded by ``_config.yml`` (``sphinx: local_extensions: {sphinx_book: tools/}``).

MathJax offline
    Sphinx loads MathJax 3 from a CDN by default, so a page read offline (or behind a firewall)
    shows raw ``\\(...\\)``. The PyPI package ``sphinx-mathjax-offline`` ships MathJax 3.2.2 with
    its fonts; its own extension cannot be loaded by name (its folder has dashes), so this one
    finds the files through the package's metadata, adds them to the build's ``_static/`` and
    points ``mathjax_path`` at them.

Search stems
    Sphinx stems the words of every page in Python (snowball's Porter) and the reader's query in
    JavaScript (the original Porter algorithm). The two disagree on a doubled final consonant that
    snowball does not undouble: "grokking" is indexed as "grokk" but searched as "grok", so a
    search for "grokking" missed every page that says "grokking" but never "grok". The index
    stems here as the browser does: after snowball, a doubled consonant other than l, s or z at
    the end of a stem loses one letter, as in step 1b of Porter's algorithm.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

MATHJAX_DISTRIBUTION = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "mathjax/tex-chtml.js"  # relative to _static/

_DOUBLED = re.compile(r"([^aeiouylsz])\1$")


def mathjax_static_dir() -> Path:
    """The folder that holds ``mathjax/`` in the installed ``sphinx-mathjax-offline``."""
    try:
        dist = importlib.metadata.distribution(MATHJAX_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"the book serves MathJax from its own build: pip install {MATHJAX_DISTRIBUTION} "
            '(in the book extra: pip install -e ".[book]")'
        ) from None
    static = Path(dist.locate_file("sphinx-mathjax-offline/static"))
    if not (static / MATHJAX_ENTRY).is_file():
        raise RuntimeError(f"{static / MATHJAX_ENTRY} is missing: reinstall {MATHJAX_DISTRIBUTION}")
    return static


def browser_stem(stem: str) -> str:
    """Undouble a final consonant as the browser's Porter stemmer does ("grokk" -> "grok")."""
    return _DOUBLED.sub(r"\1", stem)


def _english_search_class():
    from sphinx.search.en import SearchEnglish

    class SearchEnglishAsBrowser(SearchEnglish):
        """English search whose index stems agree with the query stems of ``language_data.js``."""

        def stem(self, word: str) -> str:
            return browser_stem(super().stem(word))

    return SearchEnglishAsBrowser


def _config_inited(app, config) -> None:
    config.html_static_path = list(config.html_static_path) + [str(mathjax_static_dir())]
    config.mathjax_path = MATHJAX_ENTRY


def setup(app):
    import sphinx.search
    from myst_nb.sphinx_ import HideCodeCellNode, depart_HideCellInput, visit_HideCellInput

    # myst-nb registers its "show code" toggle for the html builder only; the PDF is printed from
    # the single-page HTML builder, which then failed on every hide-input cell
    app.add_node(
        HideCodeCellNode, override=True, singlehtml=(visit_HideCellInput, depart_HideCellInput)
    )

    sphinx.search.languages["en"] = _english_search_class()
    app.connect("config-inited", _config_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
