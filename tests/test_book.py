"""Checks of the Jupyter Book: its notebooks, the built HTML in _build/html, and the pages in a real browser.

`make test` rebuilds the book first when a source changed (Makefile). Chapter pages are the pages built from
notebooks/*.ipynb. The static checks read the HTML with BeautifulSoup; then Debian's headless Chromium, driven
by playwright (never `playwright install`), opens every page served from the loopback interface with every
other request blocked, and saves a full-page screenshot of each into _build/screenshots/.

No chapter may exist just for a test, so the widget renderer is checked on a throwaway one-page book built
with the project's own _config.yml and book/static/.

A chapter declares how many figures it must show in its notebook metadata (default 1):
    "sae_tutorial": {"figures": 3}
"""
import contextlib
import dataclasses
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import jupytext
import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
# Browser messages that are not defects of this book.
KNOWN_NOISE = (
    # Sphinx 7.4 writes the inline scripts that extensions register after the builder starts twice, so
    # sphinx-thebe's `const` declarations throw on every Jupyter Book 1 page. Thebe is off; the first copy ran.
    "Identifier 'THEBE_JS_URL' has already been declared",
)


def toc_docnames(toc_file):
    """Every page (`root` and each `file`) of a Jupyter Book _toc.yml, in reading order."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from [value] if key in ("root", "file") else walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    return list(walk(yaml.safe_load(toc_file.read_text())))


DOCNAMES = toc_docnames(ROOT / "_toc.yml")
CHAPTERS = [name for name in DOCNAMES if name.startswith("notebooks/")]
SCRIPTS = sorted((ROOT / "notebooks").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@functools.cache
def parse(html_file):
    return BeautifulSoup(Path(html_file).read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="session")
def book():
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` (`make test` builds it when needed)")
    return HTML


# --- the notebooks -------------------------------------------------------------------------------------

def cells(notebook):
    return [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in notebook.cells]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_notebook_matches_its_script(script):
    notebook = script.with_suffix(".ipynb")
    fix = f"run `jupytext --to ipynb --update notebooks/{script.name}`"
    assert notebook.exists(), f"{notebook.name} is missing: {fix}"
    assert cells(nbformat.read(notebook, as_version=4)) == cells(jupytext.read(script)), f"out of sync: {fix}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_a_clean_chapter(notebook):
    nb = nbformat.read(notebook, as_version=4)
    with_outputs = [i for i, cell in enumerate(nb.cells)
                    if cell.cell_type == "code" and (cell.outputs or cell.execution_count)]
    assert not with_outputs, f"cells {with_outputs} have outputs: commit the notebook without them"
    assert nb.metadata.get("kernelspec", {}).get("name"), "kernelspec metadata is needed to execute it"
    assert notebook.with_suffix(".py").exists(), "the jupytext .py twin is the chapter's source of truth"
    assert f"notebooks/{notebook.stem}" in DOCNAMES, "every notebook is a chapter: list it in _toc.yml"


# --- the built HTML ------------------------------------------------------------------------------------

def error_outputs(page):
    return [output.get_text()[-500:] for output in page.select(".cell:not(.tag_raises-exception) .output.traceback")]


def figures(page):
    return [img["src"] for img in page.select(".cell_output img")]


def colab_links(page):
    return [a["href"] for a in page.find_all("a", href=True)
            if a["href"].startswith(CONFIG["launch_buttons"]["colab_url"])]


def expected_colab_link(notebook_path):
    repository = urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    return (f"{CONFIG['launch_buttons']['colab_url']}/github/{repository}/blob/"
            f"{CONFIG['repository']['branch']}/{notebook_path}")


def broken_links(html_file):
    """Relative links and resources of a page whose file, or whose #fragment in it, does not exist."""
    broken = []
    for tag, attribute in (("a", "href"), ("img", "src"), ("script", "src"), ("link", "href")):
        for element in parse(html_file).find_all(tag, attrs={attribute: True}):
            url = element[attribute]
            if urlsplit(url).scheme or url.startswith("//"):
                continue  # external: not checked offline
            path, fragment = urldefrag(url)
            target = (html_file.parent / unquote(urlsplit(path).path)).resolve() if path else html_file
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or (fragment and target.suffix == ".html"
                                        and parse(target).find(id=unquote(fragment)) is None):
                broken.append(url)
    return broken


@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_has_no_error_output_or_broken_link(book, docname):
    html_file = book / f"{docname}.html"
    assert error_outputs(parse(html_file)) == []
    assert broken_links(html_file) == []


@pytest.mark.parametrize("docname", CHAPTERS)
def test_chapter_has_figures_and_a_colab_link(book, docname):
    page = parse(book / f"{docname}.html")
    metadata = nbformat.read(ROOT / f"{docname}.ipynb", as_version=4).metadata
    assert len(figures(page)) >= metadata.get("sae_tutorial", {}).get("figures", 1)
    links = colab_links(page)
    student = Path("student") / f"{Path(docname).name}.ipynb"
    expected = {expected_colab_link(f"{docname}.ipynb")} | ({expected_colab_link(student)} if (ROOT / student).exists()
                                                            else set())
    assert set(links) == expected, links
    assert len(links) == 1 + len(expected), \
        "expected the theme's launch button, the chapter's 'Open in Colab' link and its student notebook's"


# --- in a real browser ---------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    """Serve a folder over HTTP on 127.0.0.1, as GitHub Pages would (file:// behaves differently)."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()


@pytest.fixture(scope="session")
def book_url(book):
    with serve(book) as url:
        yield url


@dataclasses.dataclass
class Rendered:
    problems: list        # console errors, page errors, failed or external requests, fonts that failed
    broken_images: list   # <img> that did not decode (naturalWidth 0)
    widget_views: int     # widget views embedded in the page
    widgets: int          # rendered widget elements (.jupyter-widgets)
    widget_kinds: set     # their widget-* classes, e.g. widget-slider


FACTS_JS = """() => ({
    brokenImages: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    failedFonts: [...document.fonts].filter(f => f.status === "error").map(f => f.family),
    widgetViews: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgets: [...document.querySelectorAll(".jupyter-widgets:not(.jupyter-widgets-error-widget)")]
        .map(w => [...w.classList].filter(c => c.startsWith("widget-")).join(" ")),
})"""


def render(browser, url, screenshot):
    """Open a page offline, let scripts, widgets and MathJax finish, save a screenshot, report what it saw."""
    page = browser.new_page()
    problems = []

    def on_console(message):
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def offline(route):
        if urlsplit(route.request.url).netloc == urlsplit(url).netloc:
            return route.continue_()
        problems.append(f"loads from the network: {route.request.url}")
        return route.abort()

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.route("**/*", offline)
    page.goto(url, wait_until="networkidle")
    views = page.evaluate(FACTS_JS)["widgetViews"]
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("n => document.querySelectorAll('.jupyter-widgets').length >= n", arg=views,
                               timeout=10_000)
    page.evaluate("() => window.MathJax?.startup?.promise")
    facts = page.evaluate(FACTS_JS)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=screenshot, full_page=True)
    page.close()
    problems += [f"font failed: {family}" for family in facts["failedFonts"]]
    return Rendered(problems=[p for p in problems if not any(noise in p for noise in KNOWN_NOISE)],
                    broken_images=facts["brokenImages"], widget_views=views, widgets=len(facts["widgets"]),
                    widget_kinds={kind for classes in facts["widgets"] for kind in classes.split()})


def assert_renders(rendered):
    assert rendered.problems == []
    assert rendered.broken_images == []
    assert rendered.widgets >= rendered.widget_views, "embedded widgets did not render"


@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_renders_in_chromium(book_url, browser, docname):
    rendered = render(browser, f"{book_url}/{docname}.html", SCREENSHOTS / f"{docname}.png")
    assert_renders(rendered)


# --- the widget machinery, on a throwaway book -----------------------------------------------------------

WIDGET_CELLS = [
    "# Widgets\n\nAn embedded slider and button, with $k$ in MathJax.",
    "import ipywidgets as widgets\nwidgets.IntSlider(value=16, min=1, max=64, description='k')",
    "widgets.Button(description='Show latent', icon='search')",
    "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9]);",
]


def build_book(root):
    """`jupyter-book build` as `make book` runs it: the kernel must choose matplotlib's inline backend."""
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run([jupyter_book, "build", root, "-W", "-n", "--keep-going"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "_build" / "html"


@pytest.fixture(scope="session")
def widget_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("widget-book")
    shutil.copy(ROOT / "_config.yml", root)
    shutil.copytree(ROOT / "book", root / "book")  # static assets and references.bib; its pages aren't in this toc
    (root / "_toc.yml").write_text("format: jb-book\nroot: widgets\n")
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})
    notebook.cells = [nbformat.v4.new_markdown_cell(WIDGET_CELLS[0])]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in WIDGET_CELLS[1:]]
    nbformat.write(notebook, root / "widgets.ipynb")
    return build_book(root)


def test_widget_machinery_renders_offline(widget_book, browser):
    page = parse(widget_book / "widgets.html")
    assert error_outputs(page) == []
    assert len(figures(page)) == 1, "the matplotlib figure is missing"
    assert colab_links(page) == [expected_colab_link("widgets.ipynb")]
    assert broken_links(widget_book / "widgets.html") == []
    with serve(widget_book) as url:
        rendered = render(browser, f"{url}/widgets.html", SCREENSHOTS / "widget-machinery.png")
    assert_renders(rendered)
    assert rendered.widget_views == 2
    assert {"widget-slider", "widget-button"} <= rendered.widget_kinds
