"""Check one chapter as the book will show it, without building the whole book.

    python tools/check_chapter.py grokking [--no-execute] [--threads N]

Runs, for that chapter alone, what ``make test`` checks of every chapter (issue 15):

1. its prose holds no number typed by hand (``tools/book_sources.py``);
2. it builds (executed afresh unless ``--no-execute``) into ``_build/check/<chapter>/`` with a
   table of contents of the introduction and the chapter, numbered as in the book;
3. in headless Chromium at 1366 px: no error output, maths typeset, every figure with alt text,
   a numbered caption and text at least ``plotting.MIN_TEXT_PX`` high (each figure's smallest text
   is printed); a full-page screenshot goes to ``_build/check/<chapter>.png``;
4. the student edition of the page (built without execution) keeps the exercises and drops every
   solution.

``--threads N`` executes with ``SPECTRAL_LAB_THREADS=N``: another thread count changes the order of
floating-point sums, so the runs land elsewhere, as on another machine; a page whose claims are
asserted either stays true or fails here. Prints each problem and exits 1 if there is any.
Cross-references to chapters outside the small build are reported by Sphinx as warnings only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import book_config  # noqa: E402
import book_pdf  # noqa: E402
import book_sources  # noqa: E402


def build(chapter: str, out: Path, edition: str, execute: bool, env: dict) -> Path:
    """Build the introduction and ``chapter`` into ``out``; returns the HTML folder."""
    config = book_config.book_config(edition, execute=False)
    config["execute"]["execute_notebooks"] = "force" if execute else "off"
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "Check", "numbered": True, "chapters": [{"file": f"book/{chapter}"}]},
            {"caption": "Citations", "chapters": [{"file": "book/references"}]},
        ],
    }
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "_config.yml").write_text(yaml.safe_dump(config))
        (Path(folder) / "_toc.yml").write_text(yaml.safe_dump(toc))
        command = [
            str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT),
            "--builder", "html", "--path-output", str(out),
            "--config", str(Path(folder) / "_config.yml"), "--toc", str(Path(folder) / "_toc.yml"),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"the build failed:\n{log[-6000:]}")
    warnings = [
        line for line in log.splitlines() if f"{chapter}.ipynb" in line and "WARNING" in line
    ]
    for line in warnings if execute else []:  # unexecuted, every glued value is missing
        print("build warning:", line[-300:])
    return out / "_build" / "html"


def browser_problems(chapter: str, html: Path, screenshot: Path) -> list[str]:
    import test_browser

    page = f"book/{chapter}"
    server, base = book_pdf.serve(html)
    driver, profile = book_pdf.start_chromium(*test_browser.WINDOW)
    try:
        test_browser.open_page(driver, f"{base}/{page}.html")
        problems = test_browser.figure_problems(driver, page, html)
        problems += test_browser.maths_problems(driver, page, html)
        errors = driver.execute_script(
            "return [...document.querySelectorAll('.output.traceback, .output.error, "
            ".output.stderr')].map(e => e.innerText.slice(0, 300))"
        )
        problems += [f"error output: {e}" for e in errors]
        images = driver.execute_script(
            "return [...document.querySelectorAll('article.bd-article img')].map(i => "
            "[i.currentSrc || i.src, i.getBoundingClientRect().width])"
        )
        from spectral_lab import plotting

        for number, (src, width) in enumerate(images, 1):
            png = test_browser._image_bytes(page, src, html)
            if png and png.startswith(b"\x89PNG"):
                try:
                    size = f"{plotting.rendered_text_px(png, width):.1f} px"
                except ValueError as error:
                    size = str(error)
                print(f"figure {number}: {width:.0f} px wide, smallest text {size}")
        test_browser.save_full_screenshot(driver, screenshot)
        print(f"screenshot: {screenshot}")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()
        server.server_close()
    return problems


def solution_problems(instructor: Path, student: Path) -> list[str]:
    problems = []
    if 'class="solution' not in instructor.read_text(encoding="utf-8"):
        problems.append("no {solution} directive in the instructor edition")
    html = student.read_text(encoding="utf-8")
    if 'class="solution' in html or re.search(r'<p class="admonition-title">Solution', html):
        problems.append("a solution in the student edition")
    if 'class="exercise' not in html:
        problems.append("no {exercise} directive in the student edition")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", help="the notebook's name in book/, e.g. grokking")
    parser.add_argument("--no-execute", action="store_true", help="render the saved outputs")
    parser.add_argument("--threads", type=int, help="SPECTRAL_LAB_THREADS for the execution")
    args = parser.parse_args(argv)
    source = ROOT / "book" / f"{args.chapter}.ipynb"
    if not source.exists():
        chapters = sorted(p.stem for p in (ROOT / "book").glob("*.ipynb"))
        parser.error(f"no chapter {source}; the chapters are {', '.join(chapters)}")
    env = {
        **os.environ, "SPECTRAL_LAB_MODE": "quick", "SPECTRAL_LAB_STATIC": "1",
        "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    if args.threads:
        env["SPECTRAL_LAB_THREADS"] = str(args.threads)
    problems = [f"unglued number: {n}" for n in book_sources.unglued_numbers(source)]
    out = ROOT / "_build" / "check" / args.chapter
    html = build(args.chapter, out / "instructor", "instructor", not args.no_execute, env)
    student = build(args.chapter, out / "student", "student", False, env)
    screenshot = ROOT / "_build" / "check" / f"{args.chapter}.png"
    problems += browser_problems(args.chapter, html, screenshot)
    page = Path("book") / f"{args.chapter}.html"
    problems += solution_problems(html / page, student / page)
    for problem in problems:
        print("PROBLEM:", problem)
    print(f"{args.chapter}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
