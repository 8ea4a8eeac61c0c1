"""The project's home, set in one place, and every line generated from it.

The one setting is `repository:` in `_config.yml` (`url: https://github.com/OWNER/REPO` and `branch:`). Jupyter
Book builds its launch buttons from it; this module writes everything else that names the home:

    install requirement   "sae-tutorial[colab] @ git+https://github.com/OWNER/REPO@BRANCH"   (notebooks, docs)
    Colab links           https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/notebooks/...
    clone line            git clone -b BRANCH https://github.com/OWNER/REPO sae-tutorial
    README badges         one Colab badge per chapter of _toc.yml (and one for its student notebook), between the
                          two COLAB-BADGES markers
    chapter header        each chapter's Colab link, its student notebook's Colab link and its prerequisites and
                          time (st.exercises.CHAPTERS), the lines after its title
    student notebooks     student/*.ipynb and student/solutions/*.md, regenerated from the chapters (course.py)

`python -m sae_tutorial.home` (`make home`) rewrites them in README.md, book/*.md and notebooks/*.py, then pairs
the notebooks again; `python -m sae_tutorial.home --check` lists the files that are out of date (the tests run
it). A fork changes the two lines of `_config.yml` and runs `make home`.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLAB = "https://colab.research.google.com"
BADGE = f"{COLAB}/assets/colab-badge.svg"
BADGES_START, BADGES_END = "<!-- COLAB-BADGES:START (make home) -->", "<!-- COLAB-BADGES:END -->"
EXTRA = "colab"     # pyproject's extra with everything the chapters' colab cells import


@dataclass(frozen=True)
class Home:
    owner: str
    repo: str
    branch: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.repo}"

    @property
    def requirement(self) -> str:
        """What a chapter's install cell (and a Colab user) passes to pip."""
        return f"sae-tutorial[{EXTRA}] @ git+{self.url}@{self.branch}"

    def colab_link(self, notebook: str) -> str:
        return f"{COLAB}/github/{self.owner}/{self.repo}/blob/{self.branch}/{notebook}"

    def student_link(self, notebook: str) -> str:
        """The Colab link of a chapter's student notebook (student/NAME.ipynb, see course.py)."""
        return self.colab_link(f"student/{Path(notebook).name}")


def read_home(root: Path = ROOT) -> Home:
    """The home named by `repository:` in root/_config.yml."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    repository = config.get("repository") or {}
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", str(repository.get("url", "")))
    if not match:
        raise ValueError(f"{root / '_config.yml'}: repository.url must be https://github.com/OWNER/REPO, "
                         f"got {repository.get('url')!r}")
    return Home(match[1], match[2], str(repository.get("branch") or "main"))


# Each rule: a pattern that matches any home, and what it becomes for this one.
def _rules(home: Home) -> list[tuple[re.Pattern[str], str]]:
    gh = r"https://github\.com/[\w.-]+/[\w.-]+"
    return [
        (re.compile(rf"sae-tutorial(?:\[[\w,]*\])? @ git\+{gh}(?:@[\w./-]+)?"), home.requirement),
        (re.compile(rf"{re.escape(COLAB)}/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/"),
         f"{COLAB}/github/{home.owner}/{home.repo}/blob/{home.branch}/"),
        (re.compile(rf"git clone (?:-b [\w./-]+ )?{gh}(?: sae-tutorial)?"),
         f"git clone -b {home.branch} {home.url} sae-tutorial"),
    ]


def chapters(root: Path = ROOT) -> list[str]:
    """The notebooks of _toc.yml, in reading order (paths like notebooks/01_topk_basics.ipynb)."""
    import yaml

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("file", "")).startswith("notebooks/"):
                yield node["file"] + ".ipynb"
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(yaml.safe_load((root / "_toc.yml").read_text())))


def _title(root: Path, notebook: str) -> str:
    source = (root / notebook).with_suffix(".py").read_text()
    match = re.search(r"^# # (.+)$", source, re.M)
    return match[1] if match else Path(notebook).stem


def _has_exercises(notebook: str) -> bool:
    from .exercises import exercises

    return bool(exercises(Path(notebook).stem))


def badges(home: Home, root: Path = ROOT) -> str:
    """The README's table of chapters, each with its Colab badge and its student notebook's."""
    rows = [f"| {_title(root, nb)} | [![Open in Colab]({BADGE})]({home.colab_link(nb)}) | "
            + (f"[![Open in Colab]({BADGE})]({home.student_link(nb)})" if _has_exercises(nb) else "—") + " |"
            for nb in chapters(root)]
    return "\n".join([BADGES_START, "| chapter | Colab | student notebook (exercises as stubs) |", "|---|---|---|",
                      *rows, BADGES_END])


HEADER = re.compile(r"^# \[Open in Colab\]\(.*\)\n#\n(?:# \*\*Prerequisites:\*\*.*\n#\n)?", re.M)


def header(home: Home, notebook: str) -> str:
    """A chapter's lines after its title: its Colab links, then its prerequisites and time."""
    from .exercises import CHAPTERS, exercises

    stem = Path(notebook).stem
    links = f"[Open in Colab]({home.colab_link(notebook)})"
    if _has_exercises(notebook):
        links += f" · [student notebook]({home.student_link(notebook)}) (the exercises as stubs)"
    return f"# {links}\n#\n# {CHAPTERS[stem].line(exercises(stem))}\n#\n"


def render(text: str, home: Home, root: Path = ROOT, readme: bool = False, chapter: str | None = None) -> str:
    """`text` with every line that names a home rewritten for `home`; `chapter` (notebooks/NAME.ipynb): the text
    is that chapter's source, whose header is rewritten too."""
    for pattern, replacement in _rules(home):
        text = pattern.sub(replacement, text)
    if chapter:
        if not HEADER.search(text):
            raise ValueError(f"{chapter}: no '# [Open in Colab](...)' line after the title")
        text = HEADER.sub(lambda _: header(home, chapter), text, count=1)
    if readme:
        block = re.compile(re.escape(BADGES_START) + ".*?" + re.escape(BADGES_END), re.S)
        if not block.search(text):
            raise ValueError(f"README.md has no {BADGES_START} ... {BADGES_END} block")
        text = block.sub(lambda _: badges(home, root), text)
    return text


def files(root: Path = ROOT) -> list[Path]:
    """The files that name the home: README.md, the book's pages and the chapters' jupytext sources."""
    return [root / "README.md", *sorted((root / "book").glob("*.md")), *sorted((root / "notebooks").glob("*.py"))]


def _render(path: Path, home: Home, root: Path) -> str:
    chapter = f"notebooks/{path.stem}.ipynb" if path.parent.name == "notebooks" else None
    return render(path.read_text(), home, root, path.name == "README.md", chapter)


def stale(root: Path = ROOT) -> list[Path]:
    """The files whose lines do not match the home of _config.yml, and the student files out of date."""
    from . import course

    home = read_home(root)
    return [p for p in files(root) if _render(p, home, root) != p.read_text()] + course.stale(root)


def sync(root: Path = ROOT) -> list[Path]:
    """Rewrite the stale files, pair the rewritten notebooks again (jupytext), regenerate the student notebooks;
    returns the files changed."""
    from . import course

    home = read_home(root)
    changed = [p for p in files(root) if _render(p, home, root) != p.read_text()]
    for path in changed:
        path.write_text(_render(path, home, root))
    notebooks = [str(p) for p in changed if p.suffix == ".py"]
    if notebooks:
        subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "--update", "-q", *notebooks],
                       check=True)
    return changed + course.write(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_tutorial.home", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list out-of-date files and exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for path in out:
            print(f"{path.relative_to(ROOT)} does not match _config.yml's repository: run `make home`")
        return int(bool(out))
    for path in sync():
        print(f"rewrote {path.relative_to(ROOT)}")
    print(f"home: {read_home().url} (branch {read_home().branch})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
