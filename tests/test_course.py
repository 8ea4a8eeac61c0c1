"""The student notebooks and solutions (sae_tutorial/course.py) and the grader (st.exercises.grade).

The student notebooks are committed (their Colab links open them from GitHub), so they must match the chapters;
none may hold a reference answer; grading a chapter's own notebook gives full marks, its student notebook zero.
Executing the student notebooks is tests/test_student_notebooks.py (minutes, not seconds)."""
import contextlib
import io
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

from sae_tutorial import course, exercises
from sae_tutorial.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = course.chapters()


def test_every_chapter_with_exercises_has_a_student_notebook():
    assert CHAPTERS == [f"{n:02d}_{name}" for n, name in enumerate(
        ["topk_basics", "regularizers", "vision_backbones", "evaluating", "latent_explorer", "adaptive_budgets",
         "scaling_up"], 1)]
    assert len(exercises.REGISTRY) == 16


def test_student_files_are_up_to_date():
    assert course.stale() == [], "run `make student`"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_exercise_blocks_show_their_registry_entry(stem):
    source = (ROOT / "notebooks" / f"{stem}.py").read_text()
    labels = re.findall(r"^# :label: (ex-[\w-]+)$", source, re.M)
    assert labels == [ex.label for ex in exercises.exercises(stem)], "exercises in the chapter's order"
    for ex in exercises.exercises(stem):
        assert f"# :label: {ex.label}\n#\n# {ex.meta_line}\n" in source, ex.number
        assert f"st.exercises.{ex.check.__name__}(" in source, f"the chapter calls the check of {ex.number}"
    assert "def check_" not in source, "checks live in st.exercises, not in the chapter"


def _normalised(source: str) -> set[str]:
    """Code lines without comments and spaces."""
    return {re.sub(r"\s+", "", line.split("  #")[0].split("# ")[0]) for line in source.splitlines()} - {""}


@pytest.mark.parametrize("stem", CHAPTERS)
def test_no_reference_answer_leaks_into_the_student_notebook(stem):
    chapter = jupytext.read(ROOT / "notebooks" / f"{stem}.py")
    student = nbformat.read(ROOT / "student" / f"{stem}.ipynb", as_version=4)
    answers = dict(course.answer_cells(chapter, stem))
    answer_cells = set(answers.values())
    public = set().union(*(_normalised(c.source) for i, c in enumerate(chapter.cells)
                           if c.cell_type == "code" and i not in answer_cells))
    student_lines = set().union(*(_normalised(c.source) for c in student.cells))
    for ex, i in answers.items():
        secret = _normalised(chapter.cells[i].source) - public - _normalised(course.stub(chapter.cells[i].source, ex))
        assert secret, f"exercise {ex.number}: nothing distinguishes its answer, the test would prove nothing"
        assert not secret & student_lines, f"exercise {ex.number}'s answer leaks: {sorted(secret & student_lines)}"
    text = "\n".join(c.source for c in student.cells)
    assert "{solution}" not in text and "solutions/" in text
    assert text.count("raise NotImplementedError") == sum(
        course.stub(chapter.cells[i].source, ex).count("raise") for ex, i in answers.items())


@pytest.mark.parametrize("stem", CHAPTERS)
def test_student_notebook_keeps_every_other_code_cell(stem):
    chapter = jupytext.read(ROOT / "notebooks" / f"{stem}.py")
    student = nbformat.read(ROOT / "student" / f"{stem}.ipynb", as_version=4)
    tagged = [c for c in chapter.cells if "exercise" in c.metadata.get("tags", [])]
    kept = [c.source for c in chapter.cells if c.cell_type == "code" and c not in tagged]
    assert [c.source for c in student.cells if c.cell_type == "code"
            and "exercise" not in c.metadata.get("tags", [])] == kept
    assert student.metadata["kernelspec"]["name"] and student.metadata["sae_tutorial"]["student"]


def _grade(path) -> list:
    with contextlib.redirect_stdout(io.StringIO()):
        return exercises.grade(path)


@pytest.mark.parametrize("stem", CHAPTERS)
def test_the_chapter_scores_full_marks_and_its_student_notebook_zero(stem):
    full = _grade(ROOT / "notebooks" / f"{stem}.ipynb")
    assert [g.status for g in full] == ["passed"] * len(exercises.exercises(stem)), [g.message for g in full]
    assert [g.status for g in _grade(ROOT / "student" / f"{stem}.ipynb")] == ["not done"] * len(full)


def test_a_wrong_answer_fails_with_its_message(tmp_path, capsys):
    """Chapter 1's student notebook, filled in: 1.1 forgets the ReLU, 1.2 is right, 1.3 is left as a stub."""
    chapter = jupytext.read(ROOT / "notebooks" / "01_topk_basics.py")
    nb = nbformat.read(ROOT / "student" / "01_topk_basics.ipynb", as_version=4)
    cells = {ex.number: cell for ex, cell in zip(exercises.exercises("01_topk_basics"),
                                                 [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])])}
    cells["1.1"].source = ("def topk_codes(h, k):\n    idx = h.topk(k, dim=1).indices\n"
                           "    return torch.zeros_like(h).scatter(1, idx, h.gather(1, idx))\n")
    cells["1.2"].source = next(c.source for ex, c in [(e, chapter.cells[i]) for e, i in
                                                      course.answer_cells(chapter, "01_topk_basics")] if ex.number == "1.2")
    path = tmp_path / "01_topk_basics.ipynb"
    nbformat.write(nb, path)
    assert main(["grade", str(path)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^1\.1 .* failed +0\n {10}some codes are negative", table, re.M), table
    assert max(len(line) for line in table.splitlines()) <= 88, table
    assert re.search(r"^1\.2 .* passed +1", table, re.M) and re.search(r"^1\.3 .* not done +0", table, re.M)
    assert table.rstrip().endswith("score: 1/3")
