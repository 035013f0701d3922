"""Print the single-page HTML build of the book to one PDF with headless Chromium.

Usage: python tools/book_pdf.py SINGLEHTML_INDEX OUT_PDF   (``make pdf`` builds the page first)

Serves the build folder on a local port (so MathJax and its fonts load as on the web), waits
until MathJax has typeset every formula, and prints with Chromium's own PDF printer (A4,
backgrounds on). Needs Debian's chromium and chromium-driver and selenium, like the browser
check.
"""

from __future__ import annotations

import base64
import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# no GPU, no sandbox (CI runs as root), none of the background connections a closed network refuses
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


# On paper nothing scrolls: wrap long code lines instead of cutting them at a scroll bar.
PRINT_STYLE = (
    "const style = document.createElement('style');"
    "style.textContent = '@media print { pre { white-space: pre-wrap !important;"
    " overflow: visible !important; word-break: break-word; } }';"
    "document.head.append(style);"
)


def start_chromium(width: int = 1366, height: int = 900):
    """A headless Chromium driven by selenium, and the profile folder to remove after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise RuntimeError(
                f"{path} not found: install Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver; `make browser-deps` does this)"
            )
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + (f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), profile


def serve(folder: Path):
    """A quiet HTTP server for ``folder`` on a free local port; returns (server, base URL)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def wait_for_maths(driver, timeout: float = 120) -> None:
    """Wait until the page has loaded and MathJax (if the page uses it) has typeset."""
    script = (
        "const done = arguments[arguments.length - 1];"
        "if (document.readyState !== 'complete') { done(false); return; }"
        "const mj = window.MathJax && MathJax.startup && MathJax.startup.promise;"
        "if (!mj) { done(true); return; }"
        "MathJax.startup.promise.then(() => done(true), () => done(true));"
    )
    driver.set_script_timeout(timeout)
    deadline = time.monotonic() + timeout
    while not driver.execute_async_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not finish loading")
        time.sleep(0.5)


def follow_redirect(index: Path) -> Path:
    """The page an ``index.html`` that only redirects (Jupyter Book's root page) points to."""
    match = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index.read_text(), re.I)
    return (index.parent / match.group(1)).resolve() if match else index


def print_pdf(index: Path, out: Path) -> Path:
    from spectral_lab.files import atomic_write

    if not index.exists():
        raise FileNotFoundError(f"{index} does not exist: build it with `make pdf`")
    root = index.parent.resolve()
    page = follow_redirect(index)
    if not (page.parent / "_static").exists():
        # Sphinx's single page for a root document in a subfolder (book/intro) links its assets
        # as if it sat at the top: print a copy that does.
        text = page.read_text(encoding="utf-8")
        page = atomic_write(root / "print.html", lambda handle: handle.write(text.encode()))
    server, base = serve(root)
    driver, profile = start_chromium()
    try:
        driver.get(f"{base}/{page.relative_to(root).as_posix()}")
        wait_for_maths(driver)
        driver.execute_script(PRINT_STYLE)
        # printing a long page takes minutes on a busy machine: chromedriver's renderer wait is
        # its page-load timeout (10 s unless raised)
        driver.set_page_load_timeout(900)
        printed = driver.execute_cdp_cmd(
            "Page.printToPDF",
            {"printBackground": True, "paperWidth": 8.27, "paperHeight": 11.69},  # A4, inches
        )
        pdf = base64.b64decode(printed["data"])
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()
        server.server_close()
    return atomic_write(out, lambda handle: handle.write(pdf))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = print_pdf(Path(argv[0]), Path(argv[1]))
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
