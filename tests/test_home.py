"""The project's home is set once (_config.yml's `repository:`); every install line, Colab link and badge follows."""
import json
import shutil
from pathlib import Path

import pytest

from sae_tutorial import home

ROOT = Path(__file__).resolve().parents[1]


def test_every_line_that_names_the_home_matches_config():
    assert home.stale() == [], "run `make home`"


def test_every_chapter_installs_the_colab_extra_from_the_home():
    req = home.read_home().requirement
    assert req.startswith("sae-tutorial[colab] @ git+https://github.com/")
    for notebook in home.chapters():
        cells = json.loads((ROOT / notebook).read_text())["cells"]
        install = [c for c in cells if "remove-cell" in c["metadata"].get("tags", []) and "pip" in "".join(c["source"])]
        assert len(install) == 1 and f'"{req}"' in "".join(install[0]["source"]), notebook


def test_every_chapter_links_its_student_notebook_and_states_its_prerequisites():
    from sae_tutorial import exercises

    h = home.read_home()
    for notebook in home.chapters():
        stem = notebook.split("/")[1].removesuffix(".ipynb")
        title = json.loads((ROOT / notebook).read_text())["cells"][0]["source"]
        text = "".join(title)
        assert f"[Open in Colab]({h.colab_link(notebook)})" in text, notebook
        assert (f"[student notebook]({h.student_link(notebook)})" in text) == bool(exercises.exercises(stem)), notebook
        assert exercises.CHAPTERS[stem].line(exercises.exercises(stem)) in text, notebook


def test_a_fork_changes_one_line(tmp_path):
    for name in ("_config.yml", "_toc.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("static"))
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "student", tmp_path / "student")
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace("url: https://github.com/sae-tutorial/sae-tutorial",
                                                 "url: https://github.com/my-lab/sae-course")
                      .replace("branch: main", "branch: spring-2027"))
    assert home.read_home(tmp_path) == home.Home("my-lab", "sae-course", "spring-2027")
    students = {str(p.relative_to(ROOT)) for p in (ROOT / "student").rglob("*.*")}
    expected = {"README.md", "book/how-to-run.md", "book/instructor.md",
                *(nb.replace(".ipynb", ".py") for nb in home.chapters(tmp_path)), *students}
    assert {str(p.relative_to(tmp_path)) for p in home.stale(tmp_path)} == expected
    home.sync(tmp_path)
    assert home.stale(tmp_path) == []
    for path in [*home.files(tmp_path), *(tmp_path / "notebooks").glob("*.ipynb"), *(tmp_path / "student").rglob("*.*")]:
        text = path.read_text()
        assert "github.com/sae-tutorial/" not in text, path
    readme = (tmp_path / "README.md").read_text()
    assert "git+https://github.com/my-lab/sae-course@spring-2027" in readme
    assert readme.count("colab.research.google.com/github/my-lab/sae-course/blob/spring-2027/notebooks/") == 7
    assert readme.count("colab.research.google.com/github/my-lab/sae-course/blob/spring-2027/student/") == 7
    assert "git clone -b spring-2027 https://github.com/my-lab/sae-course" in (tmp_path / "book/how-to-run.md").read_text()


def test_a_config_without_a_github_home_is_refused(tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://gitlab.com/a/b\n")
    with pytest.raises(ValueError, match="repository.url must be https://github.com/OWNER/REPO"):
        home.read_home(tmp_path)
