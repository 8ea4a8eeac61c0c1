"""Every student notebook runs from top to bottom, untouched, in small mode: no cell raises, and each exercise's
check says that it is not done yet instead of failing (st.exercises). The cells after an exercise never use the
student's answer, so nothing else changes.

This executes six chapters, one at a time: minutes, not seconds. Measured at full small-mode size (no shrink) on a
busy 2-core machine: 79, 122, 84, 61, 243 and 112 s wall (chapters 1-6), 701 s in all, about 430 s of kernel CPU.
SAE_TUTORIAL_SHRINK (st.book.shrink) divides the sizes of chapters 1, 2, 5 and 6; this file sets it to SHRINK
unless it is set (chapter 5 at SHRINK=4: 78 s instead of 243 s).
Chapter 4 reads the embedded grid that `make book` computes first (`reproduce`, cached)."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sae_tutorial import course, exercises

ROOT = Path(__file__).resolve().parents[1]
SHRINK = "4"
TIMEOUT = 600          # seconds per cell; a chapter takes 1-3 minutes on one core in small mode


@pytest.mark.parametrize("stem", course.chapters())
def test_untouched_student_notebook_runs(stem, monkeypatch):
    monkeypatch.setenv("SAE_TUTORIAL_MODE", "small")
    monkeypatch.setenv("SAE_TUTORIAL_SHRINK", os.environ.get("SAE_TUTORIAL_SHRINK", SHRINK))
    nb = nbformat.read(ROOT / "student" / f"{stem}.ipynb", as_version=4)
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []) if out.get("name") == "stdout")
    for ex in exercises.exercises(stem):
        assert f"Exercise {ex.number} ({ex.title}) is not done yet" in printed, ex.number
