"""Reading the book's sources: the prose of a chapter, the numbers in it, its exercises.

Shared by ``tests/test_book.py`` (which fails when a chapter's prose holds a number the run did
not produce) and ``tools/student_notebooks.py`` (which turns solutions into TODO cells).

A number in the prose must come from the run on the page: glued with myst-nb
(``glue("name", value, display=False)`` in a code cell, ``{glue:text}`name:.3f``` in the
text), so that it changes when the run does. Allowed without glue: integers up to 10
(counts, chapter and exercise numbers), years, and each chapter's constants, the settings the
chapter chooses rather than measures (the modulus p, widths, seeds, step counts, thresholds),
declared in the notebook's own metadata (``"spectral_lab": {"constants": ["113", "1,500"]}``;
``CONSTANTS`` below holds those shared by every chapter). Maths, code, roles (glue, cite, ref,
...), links and comments are not prose and are never checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Numbers every chapter may write without glue. A chapter's own constants (the settings it sets,
# never what it measures) sit in its notebook metadata, so that converting a chapter touches only
# that chapter's file: see chapter_constants.
CONSTANTS: dict[str, set[str]] = {
    "*": set(),
}

_FENCE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
_CODE_INFO = re.compile(r"^\s*(\{(code-cell|code-block|code|sourcecode)\}.*|[\w+-]*)\s*$")
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$|\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$")
_ROLE = re.compile(r"\{[\w:-]+\}`[^`]*`")
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)|<https?://[^>]*>|https?://\S+")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_OPTION = re.compile(r"^:[\w-]+:.*$", re.M)
_LABEL = re.compile(r"^\([\w:-]+\)=\s*$", re.M)
_NUMBER = re.compile(
    r"(?<![\w.,/])(?<![A-Za-z]-)"
    r"(?P<number>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
    r"(?![\w/]|\.\d|,\d{3})"
)


def prose(markdown: str) -> str:
    """The prose of a Markdown text: code blocks, maths, roles, code spans, link targets,
    comments, directive options and labels removed (directive bodies such as solutions stay)."""

    def fence(match: re.Match) -> str:
        if _CODE_INFO.match(match.group("info")):
            return "\n"
        return match.group("info") + "\n" + match.group("body")  # a directive: keep its text

    text = _COMMENT.sub(" ", markdown)
    previous = None
    while previous != text:  # nested directives: unwrap from the outside in
        previous, text = text, _FENCE.sub(fence, text)
    for pattern in (_DISPLAY_MATH, _INLINE_MATH, _ROLE, _CODE_SPAN, _LINK_TARGET):
        text = pattern.sub(" ", text)
    text = _OPTION.sub(" ", text)
    return _LABEL.sub(" ", text)


def numbers_in_prose(markdown: str) -> list[str]:
    """Every number written in the prose of ``markdown``, as written."""
    return [m.group("number") for m in _NUMBER.finditer(prose(markdown))]


def needs_glue(number: str, constants: set[str] = frozenset()) -> bool:
    """Whether a number of the prose must be glued: anything but an integer up to 10, a year, or
    one of the chapter's constants."""
    if number in constants:
        return False
    plain = number.replace(",", "")
    if re.fullmatch(r"\d+", plain):
        value = int(plain)
        return not (value <= 10 or 1900 <= value <= 2099)
    return True


def markdown_cells(path: Path) -> list[str]:
    """The Markdown of a chapter: each Markdown cell of a notebook, or the whole file."""
    if path.suffix == ".ipynb":
        notebook = json.loads(path.read_text())
        return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    return [path.read_text()]


def chapter_constants(path: Path) -> set[str]:
    """The numbers a chapter declares as its settings: ``metadata.spectral_lab.constants`` of
    its notebook, each written as the prose writes it ("1,500", "0.3")."""
    if path.suffix != ".ipynb":
        return set()
    metadata = json.loads(path.read_text()).get("metadata", {}).get("spectral_lab", {})
    constants = metadata.get("constants", [])
    if not isinstance(constants, list) or not all(isinstance(c, str) for c in constants):
        raise ValueError(
            f"{path.name}: metadata.spectral_lab.constants must be a list of strings, as the "
            f'prose writes the numbers (e.g. ["113", "1,500"]), not {constants!r}'
        )
    return set(constants)


def unglued_numbers(path: Path) -> list[str]:
    """The numbers in a chapter's prose that are neither glued nor allowed (module docstring)."""
    constants = CONSTANTS["*"] | CONSTANTS.get(path.stem, set()) | chapter_constants(path)
    found = []
    for cell in markdown_cells(path):
        found.extend(n for n in numbers_in_prose(cell) if needs_glue(n, constants))
    return found


# ---- exercises and solutions --------------------------------------------------------------
_SOLUTION_OPEN = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<kind>solution|admonition)\}[ \t]*(?P<arg>[^\n]*)$", re.M
)


def split_solutions(markdown: str) -> tuple[str, list[str]]:
    """``markdown`` without its solutions, and the solutions' texts.

    A solution is a ``{solution}`` directive (sphinx-exercise) or, in a chapter not yet
    converted, an ``{admonition}`` whose title starts with "Solution", fenced with backticks
    or colons; everything up to the closing fence of the same length goes.
    """
    kept, solutions, position = [], [], 0
    while True:
        match = _SOLUTION_OPEN.search(markdown, position)
        if match is None:
            kept.append(markdown[position:])
            break
        is_solution = match.group("kind") == "solution" or match.group(
            "arg"
        ).strip().lower().startswith("solution")
        close = re.compile(rf"^{re.escape(match.group('fence'))}[ \t]*$", re.M)
        end = close.search(markdown, match.end())
        if not is_solution or end is None:
            kept.append(markdown[position : match.end()])
            position = match.end()
            continue
        kept.append(markdown[position : match.start()])
        solutions.append(markdown[match.end() : end.start()].strip("\n"))
        position = end.end()
    return "".join(kept), solutions


def solution_directive_count(markdown: str) -> int:
    """How many ``{solution}`` directives (not legacy admonitions) ``markdown`` holds."""
    return sum(1 for m in _SOLUTION_OPEN.finditer(markdown) if m.group("kind") == "solution")
