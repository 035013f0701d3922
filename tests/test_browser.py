"""The built book as a reader's browser shows it: headless Chromium on every page of the table of
contents.

Runs after the book build (``make test`` does both; marked ``browser`` and
deselected in the plain pytest run). Needs Debian's ``chromium`` and
``chromium-driver`` (``make test`` installs them when missing) and the
``selenium`` test extra. Screenshots go to ``_build/screenshots/<page>.png``
and are kept as CI artifacts.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]
    for chapter in toc.get("chapters", []):
        entries.append(chapter["file"])
    for part in toc.get("parts", []):
        entries.extend(chapter["file"] for chapter in part["chapters"])
    return entries


def is_notebook(page: str) -> bool:
    return (ROOT / f"{page}.ipynb").exists()


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}; build it first with `make book`")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="pip install -e .[test] installs selenium"
    )
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(
                f"{path} not found: install Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver; `make test` does this)"
            )
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # no GPU, no sandbox (CI runs as root), and none of the background connections a closed network
    # refuses
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_every_page_of_the_toc_is_checked():
    pages = toc_pages()
    assert {"book/intro", "book/toolkit", "book/grokking"} <= set(pages)
    assert all((HTML / f"{page}.html").exists() for page in pages), (
        "a page of _toc.yml was not built"
    )


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_with_title_figures_and_no_errors(site, browser, page):
    browser.get(f"{site}/{page}.html")
    title = browser.execute_script(
        "return document.querySelector('main h1, article h1')?.innerText || ''"
    )
    assert title.strip(), f"{page}: no title"
    # every image has loaded and has pixels (a figure whose file is missing has naturalWidth 0)
    images = browser.execute_script(
        "return [...document.querySelectorAll('main img')].map(i => [i.src, i.complete, "
        "i.naturalWidth])"
    )
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"{page}: images that did not load: {broken}"
    if is_notebook(page):
        figures = [src for src, _, _ in images if "_images/" in src or src.startswith("data:image")]
        assert figures, f"{page}: a chapter without a single figure"
    errors = browser.execute_script(
        "return [...document.querySelectorAll('.output.traceback, .output.error, .output.stderr')]"
        ".map(e => e.innerText.slice(0, 300))"
    )
    assert not errors, f"{page}: error output cells: {errors}"
    text = browser.execute_script("return document.body.innerText")
    for broken_widget in (
        "Loading widget",
        "Error displaying widget",
        "Traceback (most recent call last)",
    ):
        assert broken_widget not in text, f"{page}: shows {broken_widget!r}"
    # a full-page screenshot for the CI artifacts: size the window to the page first
    height = browser.execute_script("return Math.min(document.body.scrollHeight, 20000)")
    browser.set_window_size(1280, max(900, height))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{page.replace('/', '_')}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    browser.set_window_size(1280, 900)
