"""One source, three outputs: the book's chapters, their student notebooks and their solutions.

A chapter's reference answers are the code cells tagged `exercise` in notebooks/NAME.py; st.exercises.REGISTRY
says which exercise each one answers (by the names it defines). From each chapter that has exercises this writes

    student/NAME.ipynb            the chapter with every answer cell replaced by a stub (signature and docstring,
                                  then `raise NotImplementedError`, or `...` for a value) and every {solution}
                                  dropdown replaced by a link to the solutions; the check cells are unchanged
    student/solutions/NAME.md     each exercise's reference answer and the book's solution text

`python -m sae_tutorial.course` (`make student`) writes them; `--check` lists the files that are out of date (the
tests run it, and the student notebooks are committed so that their Colab links work); `--out DIR` writes them
elsewhere (e.g. a private copy of the solutions).
"""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from . import home as home_module
from .exercises import Exercise, _defined, exercises

ROOT = home_module.ROOT
STUDENT = "student"
TAG = "exercise"
SOLUTION = re.compile(r"^````\{solution\} ([\w-]+)[^\n]*\n(.*?)^````[ \t]*$", re.M | re.S)
JUPYTEXT_CELL_KEYS = {"lines_to_next_cell", "lines_to_end_of_cell_marker"}   # how the .py is laid out
SOLUTION_OPTIONS = re.compile(r"\A(?::[\w-]+:[^\n]*\n)*\n?")


def chapters(root: Path = ROOT) -> list[str]:
    """The stems of the chapters (in _toc.yml order) that have exercises."""
    return [stem for stem in (Path(nb).stem for nb in home_module.chapters(root)) if exercises(stem)]


def _read(root: Path, stem: str):
    import jupytext

    return jupytext.read(root / "notebooks" / f"{stem}.py")


def answer_cells(notebook, stem: str) -> list[tuple[Exercise, int]]:
    """(exercise, index of its answer cell) for each exercise of the chapter, in order."""
    cells = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]
    out = []
    for ex in exercises(stem):
        found = [i for i, c in cells if set(ex.names) <= _defined(c.source)]
        if len(found) != 1:
            raise ValueError(f"notebooks/{stem}.py: exercise {ex.number} needs one cell tagged {TAG!r} that defines "
                             f"{', '.join(ex.names)}; found {len(found)}")
        out.append((ex, found[0]))
    if len(out) != len(cells):
        raise ValueError(f"notebooks/{stem}.py: {len(cells)} cells are tagged {TAG!r} but st.exercises lists "
                         f"{len(out)} exercises for this chapter")
    return out


def stub(source: str, ex: Exercise) -> str:
    """The answer cell with each function's body replaced by NotImplementedError and each value by `...`."""
    lines = source.splitlines()
    blocks: list[tuple[bool, list[str]]] = []          # (is a function, its lines)
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            first = node.body[0]
            has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                and isinstance(first.value.value, str)
            end = first.end_lineno if has_doc else first.lineno - 1       # signature (and docstring)
            blocks.append((True, lines[node.lineno - 1:end]
                           + [f'    raise NotImplementedError("Exercise {ex.number}: write {node.name}")']))
        elif isinstance(node, ast.Assign):
            target = node.targets[0]
            n = len(target.elts) if isinstance(target, ast.Tuple) else 1
            blocks.append((False, [f"{ast.get_source_segment(source, target)} = {', '.join(['...'] * n)}"]))
        else:
            raise ValueError(f"exercise {ex.number}: an answer cell holds only functions and assignments")
    title = ex.title if ex.title[-1] in "?!." else ex.title + "."
    out = [f"# Exercise {ex.number}: {title}", "# Write your answer here, then run the check cell below."]
    for i, (is_function, block) in enumerate(blocks):
        if i and (is_function or blocks[i - 1][0]):
            out += ["", ""]
        out += block
    return "\n".join(out)


def _solutions_link(home, stem: str) -> str:
    return f"{home.url}/blob/{home.branch}/{STUDENT}/solutions/{stem}.md"


def student_notebook(root: Path, stem: str):
    """The student version of a chapter, as an nbformat notebook."""
    import nbformat

    home, notebook = home_module.read_home(root), _read(root, stem)
    answers = dict((i, ex) for ex, i in answer_cells(notebook, stem))
    link = _solutions_link(home, stem)
    cells = []
    for i, cell in enumerate(notebook.cells):
        metadata = {key: value for key, value in cell.metadata.items() if key not in JUPYTEXT_CELL_KEYS}
        if i in answers:
            cells.append(nbformat.v4.new_code_cell(stub(cell.source, answers[i]), metadata=metadata))
        elif cell.cell_type == "markdown":
            text = SOLUTION.sub(f"*The solution is in [solutions/{stem}.md]({link}).*", cell.source)
            cells.append(nbformat.v4.new_markdown_cell(text, metadata=metadata))
        else:
            cells.append(nbformat.v4.new_code_cell(cell.source, metadata=metadata))
        if i == 0:
            cells.append(nbformat.v4.new_markdown_cell(
                f"**Student notebook.** Each exercise's answer cell is a stub: write your answer there, then run the "
                f"check cell after it (`st.exercises.check_...`), which tests it on hidden cases and names the likely "
                f"mistake. Until an exercise is done its check says so and the notebook goes on. Solutions: "
                f"[solutions/{stem}.md]({link}). This file is generated by `make student` from `notebooks/{stem}.py`: "
                "edit that, not this."))
    metadata = {key: value for key, value in notebook.metadata.items() if key != "jupytext"}
    metadata["sae_tutorial"] = {**metadata.get("sae_tutorial", {}), "student": True}
    out = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    for n, cell in enumerate(out.cells):
        cell.id = f"cell-{n:03d}"            # stable ids: the generated file changes only when its source does
    return out


def solutions(root: Path, stem: str) -> str:
    """The chapter's solutions as Markdown: each exercise's reference answer cell and the book's solution text."""
    notebook = _read(root, stem)
    texts = {m[1]: SOLUTION_OPTIONS.sub("", m[2], count=1).strip()
             for c in notebook.cells if c.cell_type == "markdown" for m in SOLUTION.finditer(c.source)}
    title = home_module._title(root, f"notebooks/{stem}.ipynb")
    link = home_module.read_home(root).student_link(f"{stem}.ipynb")
    parts = [f"# Solutions: {title}", "",
             f"Reference answers to the exercises of the [student notebook]({link}). Generated by `make student` "
             f"from `notebooks/{stem}.py`, whose cells tagged `exercise` hold them; the checks are `st.exercises`."]
    for ex, i in answer_cells(notebook, stem):
        parts += ["", f"## Exercise {ex.number}: {ex.title}", "", ex.meta_line, "", "```python",
                  notebook.cells[i].source.strip(), "```"]
        if ex.label in texts:
            parts += ["", texts[ex.label]]
    return "\n".join(parts) + "\n"


def outputs(root: Path = ROOT, out: Path | None = None) -> dict[Path, str]:
    """Every generated file and its text."""
    import nbformat

    out = out or root / STUDENT
    files = {}
    for stem in chapters(root):
        files[out / f"{stem}.ipynb"] = nbformat.writes(student_notebook(root, stem)) + "\n"
        files[out / "solutions" / f"{stem}.md"] = solutions(root, stem)
    return files


def stale(root: Path = ROOT) -> list[Path]:
    """The generated files that are missing or differ from what the chapters give."""
    return [p for p, text in outputs(root).items() if not p.exists() or p.read_text() != text]


def write(root: Path = ROOT, out: Path | None = None) -> list[Path]:
    """Write the student notebooks and solutions; returns the files that changed."""
    changed = []
    for path, text in outputs(root, out).items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_tutorial.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list out-of-date files and exit 1 if any")
    parser.add_argument("--out", type=Path, help=f"write here instead of {STUDENT}/")
    args = parser.parse_args(argv)
    if args.check:
        for path in stale():
            print(f"{path.relative_to(ROOT)} is out of date: run `make student`")
        return int(bool(stale()))
    for path in write(out=args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
