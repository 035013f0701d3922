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


def print_pdf(index: Path, out: Path) -> Path:
    from selenium.webdriver.common.print_page_options import PrintOptions

    from spectral_lab.files import atomic_write

    if not index.exists():
        raise FileNotFoundError(f"{index} does not exist: build it with `make pdf`")
    server, base = serve(index.parent)
    driver, profile = start_chromium()
    try:
        driver.get(f"{base}/{index.name}")
        wait_for_maths(driver)
        options = PrintOptions()
        options.page_width, options.page_height = 21.0, 29.7  # A4, in cm
        options.background = True
        pdf = base64.b64decode(driver.print_page(options))
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
