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


CODE_WIDTH = 88   # columns of a code cell; book/static/sae-tutorial.css makes them fit the text column


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_code_cells_fit_the_page(script):
    """No code line wider than CODE_WIDTH: wider ones would be clipped behind a scroll bar on the page. Cells the
    book removes (the Colab install cell, generated from the project's home) are not on the page."""
    long = [f"cell {i}: {line[:60]}… ({len(line)} columns)" for i, cell in enumerate(jupytext.read(script).cells)
            if cell.cell_type == "code" and "remove-cell" not in cell.metadata.get("tags", [])
            for line in cell.source.splitlines() if len(line) > CODE_WIDTH]
    assert not long, f"{len(long)} code lines wider than {CODE_WIDTH} columns: " + "; ".join(long[:5])


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


def printed_lines(notebook):
    """(cell, line) of the plain text an executed notebook shows: streams and plain-text results. HTML (tables,
    st.book.show_source's library source, which the page wraps), figures and widgets are checked in Chromium."""
    for i, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output.output_type == "stream":
                text = output.text
            elif output.output_type in ("display_data", "execute_result") and not (
                    {"text/html", "text/markdown", "image/png", "application/vnd.jupyter.widget-view+json"} & set(data)):
                text = data.get("text/plain", "")
            else:
                continue
            yield from ((i, line) for line in text.splitlines())


# A printed path holds the checkout's own; measure as if it were this long, so a build in a deeper folder (CI
# builds in one 7 columns deeper than /work/main) cannot push a line over the page that fitted here.
DEEP_ROOT = "/" + "d" * 31


@pytest.mark.parametrize("docname", CHAPTERS)
def test_printed_lines_fit_the_page(book, docname):
    """What a chapter prints is at most CODE_WIDTH columns wide (st.book.print_wrapped wraps long messages), with
    the checkout's path counted as DEEP_ROOT."""
    notebook = nbformat.read(ROOT / "_build" / "jupyter_execute" / f"{docname}.ipynb", as_version=4)
    lines = ((i, line.replace(str(ROOT), DEEP_ROOT)) for i, line in printed_lines(notebook))
    long = [f"cell {i}: {line[:60]}… ({len(line)})" for i, line in lines if len(line) > CODE_WIDTH]
    assert not long, f"{len(long)} printed lines wider than {CODE_WIDTH} columns: " + "; ".join(long[:5])


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
    too_wide: list        # code, output, table, figure or widget blocks wider than their container
    literals: list        # rendered text (not code, not maths) showing a literal "\\_" or "$"
    small_figures: list   # figures shown at < 90 % of their natural width and < 600 px wide


FACTS_JS = """() => ({
    brokenImages: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    failedFonts: [...document.fonts].filter(f => f.status === "error").map(f => f.family),
    widgetViews: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgets: [...document.querySelectorAll(".jupyter-widgets:not(.jupyter-widgets-error-widget)")]
        .map(w => [...w.classList].filter(c => c.startsWith("widget-")).join(" ")),
})"""


# The polish checks, run with every solution dropdown opened. A block is too wide when its content scrolls
# (scrollWidth > clientWidth) or when it reaches past the right edge of the article.
POLISH_JS = """() => {
    const article = document.querySelector("article") || document.body;
    const right = article.getBoundingClientRect().right;
    const shown = el => el.getClientRects().length > 0;
    const blocks = "div.cell_input pre, div.cell_output > div, div.cell_output pre, article div.highlight pre, "
        + "article table, article img, .cell_output .jupyter-widgets";
    const tooWide = [...article.querySelectorAll(blocks)].filter(shown)
        .filter(el => el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().right > right + 1)
        .map(el => `${el.tagName.toLowerCase()}.${[...el.classList].slice(0, 2).join(".")}: ${el.scrollWidth}`
                   + ` px in ${el.clientWidth} px: ${(el.innerText || el.getAttribute("src") || "").trim()
                   .split("\\n").reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 80)}`);
    const notProse = "pre, code, script, style, textarea, mjx-container, .MathJax, .cell_input, .cell_output";
    const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
    const literals = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.textContent;
        if ((text.includes("\\\\_") || text.includes("$")) && !node.parentElement.closest(notProse))
            literals.push(text.trim().slice(0, 120));
    }
    const smallFigures = [...article.querySelectorAll("img")].filter(shown)
        .filter(img => img.naturalWidth > 0 && img.clientWidth < 0.9 * img.naturalWidth && img.clientWidth < 600)
        .map(img => `${img.getAttribute("src")}: ${img.clientWidth} of ${img.naturalWidth} px`);
    return {tooWide, literals, smallFigures};
}"""
OPEN_SOLUTIONS_JS = """() => {
    document.querySelectorAll("button.toggle-button.toggle-button-hidden").forEach(button => button.click());
    document.querySelectorAll("details").forEach(details => { details.open = true; });
}"""


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
    page.evaluate(OPEN_SOLUTIONS_JS)
    page.wait_for_timeout(300)
    polish = page.evaluate(POLISH_JS)
    page.close()
    problems += [f"font failed: {family}" for family in facts["failedFonts"]]
    return Rendered(problems=[p for p in problems if not any(noise in p for noise in KNOWN_NOISE)],
                    broken_images=facts["brokenImages"], widget_views=views, widgets=len(facts["widgets"]),
                    widget_kinds={kind for classes in facts["widgets"] for kind in classes.split()},
                    too_wide=polish["tooWide"], literals=polish["literals"], small_figures=polish["smallFigures"])


def assert_renders(rendered):
    assert rendered.problems == []
    assert rendered.broken_images == []
    assert rendered.widgets >= rendered.widget_views, "embedded widgets did not render"
    assert rendered.too_wide == [], "blocks wider than their container (clipped or scrolling)"
    assert rendered.literals == [], "rendered text shows a literal \\_ or $ (escaped markup or unparsed maths)"
    assert rendered.small_figures == [], "figures shrunk below 90 % of their natural width and under 600 px"


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


# A page with one of each polish fault, to show that the browser checks catch them.
FAULTY_PAGE = """# Faults

An escaped underscore shows as \\\\_ here, and a lone dollar costs 5 $ here.

```text
{long_line}
```

```{{image}} wide.png
:width: 120px
```
"""


@pytest.fixture(scope="session")
def widget_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("widget-book")
    shutil.copy(ROOT / "_config.yml", root)
    shutil.copytree(ROOT / "book", root / "book")  # static assets and references.bib; its pages aren't in this toc
    (root / "_toc.yml").write_text("format: jb-book\nroot: widgets\nchapters:\n  - file: faults\n")
    (root / "faults.md").write_text(FAULTY_PAGE.format(long_line="x = 1  # " + "wide " * 30))
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(8, 2), dpi=100)                      # 800 px wide, shown at 120 px
    fig.savefig(root / "wide.png")
    plt.close(fig)
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


def test_polish_checks_catch_each_fault(widget_book, browser):
    with serve(widget_book) as url:
        rendered = render(browser, f"{url}/faults.html", SCREENSHOTS / "polish-faults.png")
    assert rendered.problems == [] and rendered.broken_images == []
    assert any("x = 1  # wide" in block for block in rendered.too_wide), rendered.too_wide
    assert any("\\_" in text for text in rendered.literals), rendered.literals
    assert any("$" in text for text in rendered.literals), rendered.literals
    assert any("wide.png: 120 of 800 px" in figure for figure in rendered.small_figures), rendered.small_figures
