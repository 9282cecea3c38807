"""A blog export as a reader sees it: `blog/index.md` turned into a page (markdown-it, tables
on) with its PNG figures, opened in headless Chromium with each interactive HTML figure, and
screenshotted into the run folder.

    from lab_ext.blog_view import view_blog
    v = view_blog(run_dir / "blog")          # -> BlogView
    v.screenshots                             # run_dir/screenshots/blog.png, .../<figure>.html.png
    v.tables, v.images, v.broken, v.figures   # what the page holds, and what did not load

The browser runs with the project's Chromium flags, a new empty profile and no network
beyond the local files (the machine has none; the pages need none: plotly.js is inlined).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.results.figcheck import CHROMIUM, CHROMIUM_ARGS

_CSS = """
body { font-family: sans-serif; max-width: 1120px; margin: 24px auto; color: #222; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
img { max-width: 100%; border: 1px solid #eee; }
em { color: #555; font-size: 12px; }
"""


@dataclass
class BlogView:
    page: Path  # the rendered index.html
    screenshots: list[Path] = field(default_factory=list)
    tables: list[int] = field(default_factory=list)  # body rows of each table on the page
    images: list[str] = field(default_factory=list)  # every <img> src on the page
    broken: list[str] = field(default_factory=list)  # images or figures that did not load or draw
    figures: dict[str, int] = field(default_factory=dict)  # interactive figure -> traces drawn


def page_html(index_md: str, title: str) -> str:
    """The markdown of a blog export as one HTML page (GitHub-flavoured tables)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(index_md)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def view_blog(blog_dir: Path | str, shots_dir: Path | str | None = None, width: int = 1200) -> BlogView:
    """Render `blog_dir/index.md` and every `*.html` figure beside it in headless Chromium;
    screenshots go to `shots_dir` (default: `screenshots/` beside `blog/`, in the run folder)."""
    blog = Path(blog_dir)
    shots = Path(shots_dir) if shots_dir is not None else blog.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page = blog / "index.html"
    page.write_text(page_html((blog / "index.md").read_text(), blog.parent.name))
    manifest = json.loads((blog / "manifest.json").read_text())
    view = BlogView(page)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gatewaylab-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": 900},
        )
        try:
            p = ctx.new_page()
            p.goto(page.resolve().as_uri(), wait_until="load")
            found = p.evaluate(
                """() => ({
                  tables: Array.from(document.querySelectorAll('table')).map(
                    (t) => t.querySelectorAll('tbody tr').length),
                  images: Array.from(document.images).map(
                    (i) => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
                })"""
            )
            view.tables = found["tables"]
            view.images = [i["src"] for i in found["images"]]
            view.broken += [i["src"] for i in found["images"] if not i["ok"]]
            shot = shots / "blog.png"
            p.screenshot(path=str(shot), full_page=True)
            view.screenshots.append(shot)
            for h in manifest.get("html", []):
                h = Path(h)
                h = h if h.is_absolute() and h.exists() else blog / h.name
                p.goto(h.resolve().as_uri(), wait_until="load")
                try:
                    p.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
                    n = p.evaluate(
                        "() => document.querySelectorAll('.js-plotly-plot .cartesianlayer .trace').length"
                    )
                except PlaywrightTimeout:  # nothing drawn: recorded as broken, the caller asserts
                    n = 0
                view.figures[h.name] = n
                if n == 0:
                    view.broken.append(h.name)
                shot = shots / f"{h.name}.png"
                p.screenshot(path=str(shot), full_page=True)
                view.screenshots.append(shot)
        finally:
            ctx.close()
    return view
