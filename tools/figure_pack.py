"""Copy every figure of a built book into one folder per chapter, in page order.

Usage: python tools/figure_pack.py HTML_DIR OUT_DIR
(``make figures``: from _build/html into _build/figures)

For each page of ``_toc.yml`` that shows figures, ``OUT_DIR/<page>/`` gets
``figure-01.png``, ``figure-02.png``, ... (the images of the built page, in order, including
interactive figures' small multiples) and ``figures.tsv`` with each file's caption number,
caption and alt text, so that a figure on a slide can be credited and described.
"""

from __future__ import annotations

import base64
import html.parser
import sys
import urllib.parse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Figures(html.parser.HTMLParser):
    """The images of a page's main content, each with its alt text and its figure caption."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self._in_article = 0
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "article":  # the page's content, not its header of launch buttons and logos
            self._in_article += 1
        if self._in_article and tag == "img" and attrs.get("src"):
            self.images.append({"src": attrs["src"], "alt": attrs.get("alt", ""), "caption": ""})
        if self._in_article and tag == "figcaption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if tag == "article":
            self._in_article -= 1
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption and self.images:
            self.images[-1]["caption"] = (self.images[-1]["caption"] + data).strip()


def toc_pages(root: Path = ROOT) -> list[str]:
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages.extend(chapter["file"] for chapter in part["chapters"])
    return pages


def page_figures(html_dir: Path, page: str) -> list[tuple[bytes, dict]]:
    """The PNG bytes and the alt text and caption of every figure of one built page."""
    path = html_dir / f"{page}.html"
    parser = _Figures()
    parser.feed(path.read_text(encoding="utf-8"))
    figures = []
    for image in parser.images:
        src = image["src"]
        if src.startswith("data:image/png;base64,"):
            data = base64.b64decode(src.split(",", 1)[1])
        elif src.endswith(".png") and "://" not in src:
            data = (path.parent / urllib.parse.unquote(src)).resolve().read_bytes()
        else:
            continue  # logos, icons and badges are not figures
        figures.append((data, image))
    return figures


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    from spectral_lab.files import atomic_write

    html_dir, out_dir = Path(argv[0]), Path(argv[1])
    if not (html_dir / "index.html").exists():
        print(f"no built book in {html_dir}: run `make book` first", file=sys.stderr)
        return 1
    total = 0
    for page in toc_pages():
        if not (html_dir / f"{page}.html").exists():
            print(f"{page}: not in this build, skipped", file=sys.stderr)
            continue
        figures = page_figures(html_dir, page)
        if not figures:
            continue
        folder = out_dir / Path(page).name
        rows = ["file\tcaption\talt"]
        for number, (data, image) in enumerate(figures, start=1):
            name = f"figure-{number:02d}.png"
            atomic_write(folder / name, lambda handle, data=data: handle.write(data))
            caption = " ".join(image["caption"].split())
            rows.append(f"{name}\t{caption}\t{' '.join(image['alt'].split())}")
        table = "\n".join(rows) + "\n"
        atomic_write(folder / "figures.tsv", lambda handle: handle.write(table.encode()))
        total += len(figures)
        print(f"{folder}: {len(figures)} figures")
    print(f"{total} figures in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
