"""The Colab rehearsal (`make colab-rehearsal`): every chapter's colab-mode cells, executed offline on a CPU, in a
fresh virtual environment installed the way a Colab user's is.

1. Install. A new virtual environment gets only torch, torchvision and ipykernel (what a Colab runtime brings
   that matters here) with their requirements, hard-linked from the environment that runs the rehearsal, then
   the chapters' own install line, pointed at this checkout instead of GitHub. The development .venv's other
   packages are never seen by the chapters.
2. Imports. Every module a chapter imports, and those the library imports in colab mode (open_clip, timm,
   datasets, umap), must import in that environment.
3. Stand-ins for the hub. Chapter 3 finds a generated folder with exactly imagenette2-320's layout where it would
   download it (`train/n01440764/*.JPEG`, `val/...`, a few images per class); the hub backbones are built at
   their real architectures with random weights (its `BACKBONE_WEIGHTS` parameter set to "random", injected
   after the parameters cell as papermill does). HF_HUB_OFFLINE=1: a download attempt fails at once.
4. Run. Each chapter, top to bottom, with SAE_TUTORIAL_MODE=colab on the CPU and the one rehearsal knob,
   SAE_TUTORIAL_SHRINK=N (`st.book.shrink`: the chapters' sizes ÷ N, same cells, same calls); two chapters run
   side by side, each in its own kernel with one torch thread. The install cell runs too: a stand-in
   `google.colab` module makes the kernel look like Colab's. Any error in any cell fails the rehearsal; a cell
   that needs a GPU prints that it is skipped.

The caches the embedded default needs in every mode (the embedded backbone, the Fashion-MNIST embeddings, the
embedded grid) are the same as the book build's: `--seed-cache DIR` hard-links them from that build's cache
instead of recomputing them (`make test` does this after `make book`).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import home

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "sae-colab-rehearsal"
COLAB_RUNTIME = ("torch", "torchvision", "ipykernel")      # what the fresh environment starts from
LIBRARY_OPTIONAL = ("torchvision", "open_clip", "timm", "datasets", "umap")   # imported by the library in colab mode
# Injected after a chapter's parameters cell, where it has them ({cache} is the rehearsal's cache folder).
PARAMETERS = {"BACKBONE_WEIGHTS": "random", "PUBLIC_REPO": "{cache}/hub-stand-in/sae-for-vlm"}
SEEDED = ("backbones", "embeddings", "reproduce")          # cache folders of the embedded default, shared with the book
IMAGENETTE = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
              "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
              "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
              "n03888257": "parachute"}


# ---------------------------------------------------------------- stand-in data
def imagenette_folder(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write root/imagenette2-320 with imagenette2-320's layout: {train,val}/<WordNet id>/<id>_<i>.JPEG, 320 px
    on the short side, a few images per class (a coloured shape per class on noise), and noisy_imagenette.csv."""
    from PIL import Image, ImageDraw

    per_class = per_class or {"train": 2, "val": 2}
    out = root / "imagenette2-320"
    rng = np.random.default_rng(seed)
    rows = ["path,noisy_labels_0,noisy_labels_1,noisy_labels_5,noisy_labels_25,noisy_labels_50,is_valid"]
    for c, wnid in enumerate(IMAGENETTE):
        colour = tuple(int(v) for v in rng.integers(40, 255, 3))
        for split, n in per_class.items():
            (out / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (427, 320) if (c + i) % 2 else (320, 480)
                pixels = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)            # (H, W, 3) noise
                image = Image.fromarray(pixels)
                x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
                box = (int(x0), int(y0), int(x0 + w // 3 + 10 * c), int(y0 + h // 3))
                (ImageDraw.Draw(image).ellipse if c % 2 else ImageDraw.Draw(image).rectangle)(box, fill=colour)
                name = f"{wnid}_{i}.JPEG"
                image.save(out / split / wnid / name, quality=85)
                rows.append(f"{split}/{wnid}/{name},{','.join([wnid] * 5)},{split == 'val'}")
    (out / "noisy_imagenette.csv").write_text("\n".join(rows) + "\n")
    return out


def hub_sae_repo(root: Path, d: int = 1024, m: int = 8192, k: int = 32, seed: int = 0) -> Path:
    """Write root/hub-stand-in/sae-for-vlm: a repository of two dictionary_learning BatchTopK SAEs in sub-folders
    (ae.pt, a plain state dict, + config.json {"trainer": ...}, as its trainSAE writes them), random weights with
    unit decoder rows; chapter 5's PUBLIC_REPO points here instead of the hub."""
    import torch

    out = root / "hub-stand-in" / "sae-for-vlm"
    gen = torch.Generator().manual_seed(seed)
    for layer in (11, 22):
        folder = out / f"clip-vit-l-14_layer_{layer}" / "trainer_0"
        folder.mkdir(parents=True, exist_ok=True)
        decoder = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1)      # (m, d) unit rows
        state = {"encoder.weight": decoder.clone(), "encoder.bias": torch.zeros(m), "decoder.weight": decoder.T.clone(),
                 "b_dec": torch.zeros(d), "k": torch.tensor(k), "threshold": torch.tensor(0.05)}
        torch.save(state, folder / "ae.pt")
        trainer = {"dict_class": "BatchTopKSAE", "trainer_class": "BatchTopKTrainer", "activation_dim": d,
                   "dict_size": m, "k": k, "layer": layer, "lm_name": "openai/clip-vit-large-patch14",
                   "submodule_name": f"vision_model.encoder.layers.{layer}"}
        (folder / "config.json").write_text(json.dumps({"trainer": trainer}, indent=1))
    (out / "README.md").write_text("A local stand-in with the layout of a hub repository of dictionary_learning SAEs.\n")
    return out


# ---------------------------------------------------------------- the environment
TARGET_ENV = "SAE_TUTORIAL_REHEARSAL_TARGET"    # internal: the wheel the chapter processes install


def install_line(target: Path | None = None) -> str:
    """The requirement every chapter's install cell passes to pip, pointed at `target` (a wheel built from this
    checkout, as a git+https URL builds one; default $SAE_TUTORIAL_REHEARSAL_TARGET, else the checkout itself)
    instead of GitHub. A wheel makes a second install cell find the library already installed, as on Colab."""
    h = home.read_home()
    target = target or Path(os.environ.get(TARGET_ENV, ROOT))
    return h.requirement.replace(f"git+{h.url}@{h.branch}", target.resolve().as_uri())


def build_wheel(out: Path) -> Path:
    """A wheel of this checkout in `out` (what pip builds from the git URL on Colab)."""
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)], check=True,
                   stdout=subprocess.DEVNULL)
    return next(out.glob("sae_tutorial-*.whl"))


def chapter_imports(root: Path = ROOT) -> list[str]:
    """Top-level modules the chapters import (from their jupytext sources), and the library's colab-mode ones."""
    names = set(LIBRARY_OPTIONAL)
    for notebook in home.chapters(root):
        tree = ast.parse((root / notebook).with_suffix(".py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    names -= set(sys.stdlib_module_names) | {"google"}
    return sorted(names)


def runtime_closure(names: tuple[str, ...] = COLAB_RUNTIME) -> list["importlib.metadata.Distribution"]:  # noqa: F821
    """The distributions installed here for `names` and everything they require, extras followed (torch needs
    `cuda-toolkit[cufft,...]`), markers evaluated for this interpreter: the Colab runtime the chapters stand on."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, str]] = set()
    dists: dict[str, metadata.Distribution] = {}
    todo = [(name, "") for name in names]
    while todo:
        name, extra = todo.pop()
        name = canonicalize_name(name)
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        if name not in dists:
            try:
                dists[name] = metadata.distribution(name)
            except metadata.PackageNotFoundError as e:
                raise RuntimeError(f"the rehearsal's runtime needs {name}, not installed in {sys.prefix}") from e
        for r in map(Requirement, dists[name].requires or []):
            if not r.marker or r.marker.evaluate({"extra": extra}):
                todo += [(r.name, "")] + [(r.name, e) for e in r.extras]
    return list(dists.values())


def link_runtime(site: Path, dists: list) -> int:
    """Hard-link every file of `dists` (their RECORD, dist-info included) into `site`, a fresh site-packages;
    returns the number of files. pip there sees them installed; no byte is downloaded or copied (a copy only
    where a link cannot cross file systems). Scripts outside site-packages are left out."""
    n = 0
    for dist in dists:
        for f in dist.files or []:
            src, dst = Path(dist.locate_file(f)), site / f
            if f.parts[0] == ".." or not src.is_file():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            n += 1
    return n


def _run_logged(python: Path, args: list[str], log: Path) -> None:
    """Run `python *args` with its output appended to `log`; on failure, an error that shows the log's end."""
    with open(log, "a") as f:
        print("$", python.name, *args, file=f, flush=True)
        proc = subprocess.run([str(python), *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = [line for line in log.read_text().splitlines() if "is ignored: it is neither" not in line][-25:]
        raise RuntimeError(f"`{python.name} {' '.join(args)}` failed (exit {proc.returncode}); the end of {log}:\n"
                           + "\n".join(tail))


def make_venv(venv: Path, log: Path) -> Path:
    """A fresh virtual environment holding only the Colab runtime's torch, torchvision and ipykernel (with their
    requirements, hard-linked from the environment that runs this), then the chapters' install line; returns its
    python. Linking, not a second pip download of torch's ~6 GB: the same versions at no disk or network cost."""
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dists = runtime_closure()
    n = link_runtime(site, dists)
    with open(log, "a") as f:
        print(f"linked {n} files of {len(dists)} distributions into {site}: "
              + ", ".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)), file=f)
    _run_logged(python, ["-m", "pip", "install", "-q", install_line()], log)
    _run_logged(python, ["-m", "ipykernel", "install", "--prefix", str(venv), "--name", KERNEL], log)
    return python


def missing_imports(python: Path) -> list[str]:
    """The chapters' modules that do not import in the environment of `python`."""
    script = ("import importlib, json, sys\nbad = []\nfor name in sys.argv[1:]:\n    try:\n"
              "        importlib.import_module(name)\n    except Exception as e:\n"
              "        bad.append(f'{name} ({type(e).__name__}: {e})')\nprint(json.dumps(bad))")
    out = subprocess.run([str(python), "-c", script, *chapter_imports()], capture_output=True, text=True,
                         check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- one chapter
def prepare(notebook: Path, cache: Path | None = None) -> "nbformat.NotebookNode":  # noqa: F821
    """The chapter as the rehearsal runs it: a stand-in google.colab first, its install cell pointed at this
    checkout, and PARAMETERS injected after its parameters cell."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    h = home.read_home()
    for cell in nb.cells:
        if cell.cell_type == "code" and h.requirement in cell.source:
            cell.source = cell.source.replace(h.requirement, install_line())
    params = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if params is not None:
        given = {k: v for k, v in PARAMETERS.items() if re.search(rf"^{k}\s*=", nb.cells[params].source, re.M)}
        if given:
            values = {k: v.format(cache=cache or Path(os.environ.get("SAE_TUTORIAL_CACHE", "."))) for k, v in
                      given.items()}
            source = "# Injected by the Colab rehearsal\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
            nb.cells.insert(params + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    colab = ("# Injected by the Colab rehearsal: look like a Colab kernel, so that the install cell runs\n"
             "import importlib.machinery, sys, types\ncolab = types.ModuleType('google.colab')\n"
             "colab.__spec__ = importlib.machinery.ModuleSpec('google.colab', None)  # find_spec() finds it\n"
             "sys.modules.setdefault('google.colab', colab)")
    nb.cells.insert(0, nbformat.v4.new_code_cell(colab, metadata={"tags": ["injected-colab"]}))
    return nb


def run_chapter(notebook: Path, out_dir: Path, timeout: int = 900) -> dict[str, object]:
    """Execute one prepared chapter in the rehearsal kernel; writes the executed notebook into out_dir."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = prepare(notebook)
    start, error = time.perf_counter(), None
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(notebook.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:300]
    nbformat.write(nb, out_dir / notebook.name)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    skipped = sorted(set(re.findall(r"skipped[^\n]*GPU[^\n]*", outputs)))
    return {"chapter": notebook.stem, "seconds": round(time.perf_counter() - start, 1),
            "cells": sum(c.cell_type == "code" for c in nb.cells), "error": error, "gpu_skipped": skipped}


# ---------------------------------------------------------------- the whole rehearsal
def seed_cache(source: Path, cache: Path) -> list[str]:
    """Hard-link the embedded default's caches (SEEDED folders) from the book build's cache into `cache`. Caches
    are replaced by rename, never rewritten in place, so a linked file is never changed under the other."""
    seeded = []
    for name in SEEDED:
        if (source / name).is_dir():
            shutil.copytree(source / name, cache / name, copy_function=os.link, dirs_exist_ok=True)
            seeded.append(name)
    return seeded


WARM_CACHES = ("import sae_tutorial as st\nfor split in ('train', 'test'):\n"
               "    st.embed('embedded', 'fashion-mnist', split, progress=False)")


def _run_in_process(notebook: Path, executed: Path) -> dict[str, object]:
    """run_chapter in a child process (its own kernel, one torch thread); prints and returns its row."""
    proc = subprocess.run([sys.executable, "-m", "sae_tutorial.rehearsal", "--one", str(notebook), "--out",
                           str(executed)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        row = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        row = {"chapter": notebook.stem, "seconds": 0.0, "cells": 0, "gpu_skipped": [],
               "error": f"the rehearsal process failed: {proc.stderr.strip()[-300:]}"}
    print(f"{row['chapter']}: {'ok' if row['error'] is None else 'FAILED'} in {row['seconds']:.0f} s "
          f"({row['cells']} cells){': ' + row['error'] if row['error'] else ''}", flush=True)
    for line in row["gpu_skipped"]:
        print(f"    {line}", flush=True)
    return row


def rehearse(out: Path, shrink: int = 8, chapters: list[str] | None = None, seed_from: Path | None = None,
             reuse_venv: bool = False, jobs: int = 2) -> int:
    """The whole rehearsal into `out` (venv, cache, executed notebooks, report.md); returns the exit status."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    venv, cache, executed = out / "venv", out / "cache", out / "executed"
    log = out / "install.log"
    log.write_text("")
    python = venv / "bin" / "python"
    os.environ[TARGET_ENV] = str(build_wheel(out / "wheel"))
    if not (reuse_venv and python.exists()):
        print(f"fresh venv in {venv}: {', '.join(COLAB_RUNTIME)} (linked), then pip install {install_line()!r} ...",
              flush=True)
        make_venv(venv, log)
    else:               # a kept venv: this checkout's wheel replaces the library installed there
        _run_logged(python, ["-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", os.environ[TARGET_ENV]],
                    log)
    install_s = time.perf_counter() - t0
    missing = missing_imports(python)
    print(f"install: {install_s:.0f} s; chapter imports missing in the fresh venv: {missing or 'none'}", flush=True)
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    seeded = seed_cache(seed_from, cache) if seed_from else []
    imagenette_folder(cache)
    hub_sae_repo(cache)
    executed.mkdir(exist_ok=True)
    os.environ.pop("PYTHONPATH", None)
    os.environ.update({"SAE_TUTORIAL_MODE": "colab", "SAE_TUTORIAL_SHRINK": str(shrink), "HF_HUB_OFFLINE": "1",
                       "SAE_TUTORIAL_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": "",
                       "JUPYTER_PATH": str(venv / "share" / "jupyter"),
                       "NUMBA_CACHE_DIR": str(out / "numba"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    if not seeded:      # the embedded default's caches, built once before chapters that read them run side by side
        subprocess.run([str(python), "-c", WARM_CACHES], check=True)
    todo = [ROOT / nb for nb in home.chapters() if not chapters or any(c in nb for c in chapters)]
    with ThreadPoolExecutor(jobs) as pool:        # each chapter in its own process and kernel, one thread each
        rows = list(pool.map(lambda nb: _run_in_process(nb, executed), todo))
    failed = [r for r in rows if r["error"]] or bool(missing)
    lines = ["# Colab rehearsal", "", f"SAE_TUTORIAL_MODE=colab on CPU, SAE_TUTORIAL_SHRINK={shrink}, install line "
             f"`{install_line()}`; seeded caches: {', '.join(seeded) or 'none'}", "",
             f"- install: {install_s:.0f} s; missing imports: {', '.join(missing) or 'none'}", "",
             "| chapter | seconds | cells | result | skipped (needs a GPU) |", "|---|---|---|---|---|"]
    lines += [f"| {r['chapter']} | {r['seconds']:.0f} | {r['cells']} | {r['error'] or 'ok'} | "
              f"{'; '.join(r['gpu_skipped']) or '-'} |" for r in rows]
    lines += ["", f"total {time.perf_counter() - t0:.0f} s"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_tutorial.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "colab-rehearsal", help="working folder")
    parser.add_argument("--shrink", type=int, default=8, help="SAE_TUTORIAL_SHRINK for every chapter")
    parser.add_argument("--chapter", action="append", help="run only chapters whose name contains this (repeatable)")
    parser.add_argument("--seed-cache", type=Path, help="hard-link the embedded default's caches from this cache")
    parser.add_argument("--reuse-venv", action="store_true", help="keep an existing rehearsal venv (development)")
    parser.add_argument("--jobs", type=int, default=2, help="chapters run side by side, one torch thread each")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)      # internal: one chapter, a JSON row out
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_chapter(args.one, args.out)))
        return 0
    return rehearse(args.out, args.shrink, args.chapter, args.seed_cache, args.reuse_venv, args.jobs)


if __name__ == "__main__":
    raise SystemExit(main())
