"""What the commands share: torchrun ranks, safe output folders, method-card provenance, the printed report."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import metrics
from ..metrics.report import AS_STORED, L2_NORMALISED
from ..runs import Source


@contextlib.contextmanager
def ranks(device: str | None) -> Iterator[tuple[int, Any]]:
    """(rank, device) for a command; under torchrun (WORLD_SIZE > 1) one process group and one device per rank."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    try:
        yield rank, dev
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------- output folders
def _holds_something(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def refuse_existing(out: Path, overwrite: bool) -> None:
    """An --out that already holds files is refused unless `overwrite` (an empty folder is fine)."""
    if overwrite or not _holds_something(out):
        return
    from ..interop import detect
    try:
        what = f"an SAE ({detect(out)})"
    except (ValueError, OSError):
        what = "files"
    raise FileExistsError(f"--out {out} already holds {what}; pass --overwrite to replace it, or choose another --out")


@contextlib.contextmanager
def staged(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh temporary folder beside `out` to write into; when the block ends without error it replaces `out` by a
    rename (an existing `out` is moved aside first and deleted only after the new one is in place), else it is
    deleted and `out` is left as it was."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        refuse_existing(out, overwrite)            # again: another run may have written it meanwhile
        old = out.with_name(f".{out.name}.old-{os.getpid()}") if _holds_something(out) else None
        if old is not None:
            os.replace(out, old)
        elif out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- method cards
def card_source(source: Source, split: str) -> dict[str, Any]:
    """The source fields of a method card (metrics.report.SOURCE_FIELDS) for rows read by runs.read_source."""
    p = source.provenance
    if p["kind"] == "embedding cache":
        return metrics.card_source(p["backbone"], p["dataset"]["name"], split,
                                   L2_NORMALISED if p["normalized"] else AS_STORED)
    rows = "embeddings L2-normalised" if p["normalized"] else "embeddings as stored"
    unknown = f"unknown: rows of {p['path']} (sha256 {p['sha256'][:16]}…)"
    return {"source_model": unknown, "layer": unknown, "pooling": unknown, "dataset": unknown, "split": split,
            "preprocessing": rows}


# ---------------------------------------------------------------- the printed report
def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def report_table(report: dict[str, Any], title: str) -> str:
    """st.metrics.evaluate's report as an aligned two-column table."""
    m, top_n = report["n_latents"], report["top_n"]
    rows = [("FVU", _num(report["fvu"])), ("R²", _num(report["r2"])), ("cosine", _num(report["cosine"])),
            ("L0", f"{report['l0']:.1f}"),
            ("dead latents", f"{_pct(report['dead_frac'])} ({report['dead']} of {m} never fire)"),
            ("rare latents", f"{_pct(report['rare_frac'])} ({report['rare']} of {m} fire on 1 to {top_n - 1} "
                             "rows)"),
            (f"MS, alive mean / max{report.get('ms_space', '')}",
             f"{_num(report['ms_mean'])} / {_num(report['ms_max'])}")]
    if "purity" in report:
        rows.append(("class purity (top-n), alive mean",
                     f"{_num(report['purity'])} (chance {_num(report['purity_chance'])})"))
    probes = {key[len("probe_n"):]: v for key, v in report.items() if key.startswith("probe_n")}
    if probes:
        rows.append(("probe accuracy, top-n codes", ", ".join(f"n={n}: {_num(v)}" for n, v in probes.items())
                     + f"; dense {_num(report['probe_dense'])}"))
    ks = {key[len("fvu_k"):]: v for key, v in report.items() if key.startswith("fvu_k")}
    if ks:
        rows.append(("FVU at inference k'", ", ".join(f"{k}: {_num(v)}" for k, v in ks.items())))
    rows += [("CKNNA", _num(report["cknna"])), ("decoder orthogonality", _num(report["decoder_orthogonality"]))]
    width = max(len(name) for name, _ in rows)
    return "\n".join([title, *(f"  {name:<{width}}  {value}" for name, value in rows)])
