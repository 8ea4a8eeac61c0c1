"""One pass, one report: `evaluate` runs an SAE over a data set and computes every metric; `method_card` writes
the report with its provenance as JSON and Markdown (the fields of notes/paper.md, "Method card")."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ..checkpoint import atomic_write
from ..sae import SparseAutoencoder
from ._stream import CHUNK, Coo, RowReader, Rows, iter_rows, labels_matrix
from .alignment import cknna, linear_probe, truncated_probe
from .reconstruction import (Firing, Reconstruction, budgets, decoder_orthogonality, inference, require_sae,
                             update_shared)
from .controls import control_report, controlled_means, purity_chance_curve
from .semantics import Monosemanticity, TopActivations, alive_max, alive_mean, purity_from_top

PROBE_NS = (1, 2, 4, 8, 16, 32)
CKNNA_K = 10  # neighbours, as in Huh et al. (2024)


class RowSample:
    """A uniform random subset of `size` rows of a stream (the rows with the smallest i.i.d. uniform keys),
    kept on the CPU in random order, with their row numbers."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.gen = torch.Generator().manual_seed(seed)
        self.keys, self.rows, self.x = torch.empty(0), torch.empty(0, dtype=torch.long), None

    def update(self, x: Tensor, start: int) -> None:
        keys = torch.cat([self.keys, torch.rand(x.shape[0], generator=self.gen)])
        rows = torch.cat([self.rows, torch.arange(start, start + x.shape[0])])
        xs = x.cpu() if self.x is None else torch.cat([self.x, x.cpu()])
        order = keys.topk(min(self.size, keys.shape[0]), largest=False).indices   # ascending keys
        self.keys, self.rows, self.x = keys[order], rows[order], xs[order]


def default_ks(k: int | None, m: int) -> list[int]:
    """Inference budgets k/4, k/2, k, 2k, 4k (those within 1..m); none for variants without a fixed k."""
    return [] if k is None else sorted({b for b in (k // 4, k // 2, k, 2 * k, 4 * k) if 1 <= b <= m})


def _codes_coo(sae: SparseAutoencoder, out: Any, start: int) -> Coo:
    if out.indices is not None:
        return Coo.from_topk(out.indices, out.values, sae.n_latents, start)
    return Coo.from_dense(out.codes, start)


def _probe(sae: SparseAutoencoder, sample: RowSample, y: Tensor, ns: list[int],
           train_frac: float = 0.8, dense: bool = True) -> dict[str, float]:
    """Truncated probes and the dense reference on the sample, fit on its first `train_frac` and scored on the
    rest (the sample is in random order)."""
    x, y = sample.x, y[sample.rows]
    cut = int(train_frac * x.shape[0])
    if cut < 2 or cut == x.shape[0] or len(set(y[:cut].tolist())) < 2:
        return {}

    def codes(rows: Tensor):  # streamed: only each row's top max(ns) codes are kept
        return (sae.encode(xb.to(sae.W_dec.device, sae.W_dec.dtype)) for xb in rows.split(CHUNK))
    acc = truncated_probe(codes(x[:cut]), y[:cut], codes(x[cut:]), y[cut:], ns)
    report = {**{f"probe_n{n}": a for n, a in acc.items()}, "probe_test_rows": x.shape[0] - cut}
    if dense:
        report["probe_dense"] = linear_probe(x[:cut], y[:cut], x[cut:], y[cut:])
    return report


def evaluate(sae: SparseAutoencoder, data: Rows, labels: Any = None, embeddings: Rows | None = None, *,
             ks: Sequence[int] | None = None, top_n: int = 50, probe_ns: Sequence[int] | None = None,
             sample_size: int = 10_000, cknna_samples: int = 1024, chunk_size: int = CHUNK,
             seed: int = 0, cross_embeddings: Rows | None = None, probe_train_frac: float = 0.8,
             dense_probe: bool = True) -> dict[str, Any]:
    """Every metric of an SAE on a data set, in one pass over `data`: a flat dict, one row of a DataFrame.

    data: (N, d) inputs or chunks, read once (a generator over shards works). labels: (N,) class ids or (N, C)
    0/1 (enables purity; single-label ones also the probes). embeddings: (N, D) or chunks, the space of the
    Monosemanticity Score (default: the SAE's input). cross_embeddings: (N, D') or chunks of the same images in
    another model's space (e.g. the other backbone): MS is also scored there, the cross-model control (an SAE
    judged in the very space it was trained on can look monosemantic by construction).
    ks: inference budgets for k-robustness (default k/4..4k for fixed-k variants; [] skips it). probe_ns: truncation
    levels (default 1, 2, 4, ..., 32 and k; [] skips the probes). The probes (80/20 split) and CKNNA run on a
    uniform random sample of `sample_size` rows, re-encoded at the end; CKNNA on its first `cknna_samples`. The probes
    fit on the first `probe_train_frac` of the sample and are scored on the rest; dense_probe=False skips the
    probe on the raw inputs (a property of the data, the same for every SAE on them).
    Keys: fvu, r2, cosine, l0, dead, dead_frac, decoder_orthogonality, ms_mean, ms_max, ms_mean_dead_zero
    (MonoLoss's mean, NaN counted as 0), fvu_k{k'}, cosine_k{k'}, purity, purity_weighted, purity_chance,
    probe_n{n}, probe_dense, cknna, and what was measured (variant, d_in, n_latents, k, n_samples, top_n).
    Controls (controls.py; "frequent" = firing on ≥ top_n rows, "rare" = on 1 .. top_n − 1): ms_mean_frequent,
    rare, rare_frac, frequent, frequent_frac; with labels purity_dead_zero, purity_frequent, and the chance
    level matched to each latent's number of top images, purity_chance_matched (mean over alive latents) and
    purity_chance_matched_dead_zero (dead as 0); over frequent latents the matched chance is purity_chance.
    With cross_embeddings: ms_cross_mean, ms_cross_mean_dead_zero, ms_cross_mean_frequent (the three means of MS
    scored in that space), and probe_test_rows (rows the probes were scored on) whenever probes ran.
    """
    m, k = require_sae(sae).n_latents, getattr(sae, "k", None)
    ks = budgets(default_ks(k, m) if ks is None else ks, m)
    ns = sorted({*PROBE_NS, *([k] if k else [])} if probe_ns is None else probe_ns)
    y, multi = labels_matrix(labels) if labels is not None else (None, False)
    sample = RowSample(_checks.positive_int(sample_size, "sample_size"), seed)
    if not 0 < probe_train_frac < 1:
        raise ValueError(f"probe_train_frac must lie in (0, 1), got {probe_train_frac!r}")
    emb = None if embeddings is None else RowReader(embeddings, "embeddings", chunk_size=chunk_size)
    cross = None if cross_embeddings is None else RowReader(cross_embeddings, "cross_embeddings", chunk_size=chunk_size)
    with inference(sae) as (device, dtype):
        recon, firing, ms, cross_ms = Reconstruction(), Firing(m, device), None, None
        robust = {kk: Reconstruction() for kk in ks}
        top = None if y is None else TopActivations(m, top_n, device)
        n = 0
        for x in iter_rows(data, "data", sae.d_in, chunk_size):
            x = x.to(device, dtype)
            out = sae(x)
            codes = _codes_coo(sae, out, n)
            firing.update(codes)
            e = x if emb is None else emb.take(x.shape[0])
            ms = ms or Monosemanticity(m, e.shape[1], device)
            ms.update(codes, e)
            if cross is not None:
                e = cross.take(x.shape[0])
                cross_ms = cross_ms or Monosemanticity(m, e.shape[1], device)
                cross_ms.update(codes, e)
            if top is not None:
                top.update(codes)
            x_hats = sae.reconstruct_budgets(x, list(robust)) if robust else {}
            update_shared([recon, *(robust[kk] for kk in x_hats)], x, [out.x_hat, *x_hats.values()])
            sample.update(x, n)
            n += x.shape[0]
        for reader in (emb, cross):
            if reader is not None:
                reader.finish()
        dead, scores, counts = firing.dead(), ms.scores(), firing.counts.cpu()
        report: dict[str, Any] = {
            "variant": type(sae).__name__, "d_in": sae.d_in, "n_latents": m, "k": k, "n_samples": n, "top_n": top_n,
            "fvu": recon.fvu(), "r2": recon.r2(), "cosine": recon.cosine(), "l0": firing.l0(),
            "dead": int(dead.sum()), "dead_frac": float(dead.float().mean()),
            "decoder_orthogonality": decoder_orthogonality(sae),
            "ms_mean": alive_mean(scores), "ms_max": alive_max(scores),
            "ms_mean_dead_zero": float(scores.nan_to_num(0.0).mean()),
        }
        if cross_ms is not None:
            means = controlled_means(cross_ms.scores(), counts, top_n)
            report.update(ms_cross_mean=means["alive"], ms_cross_mean_dead_zero=means["dead_zero"],
                          ms_cross_mean_frequent=means["frequent"])
        for kk, stats in robust.items():
            report[f"fvu_k{kk}"], report[f"cosine_k{kk}"] = stats.fvu(), stats.cosine()
        if y is None:
            report.update(control_report(scores, counts, top_n))
        else:
            if y.shape[0] != n:
                raise ValueError(f"data has {n} rows but labels has {y.shape[0]}")
            purity, curve = purity_from_top(top, y, multi, False), purity_chance_curve(y, top.top_n, seed=seed)
            report.update(top_n=top.top_n, purity=alive_mean(purity),
                          purity_weighted=alive_mean(purity_from_top(top, y, multi, True)),
                          purity_chance=float(curve[-1]),
                          **control_report(scores, counts, top.top_n, purity, (top.rows >= 0).sum(0), curve))
            if not multi and ns:
                report.update(_probe(sae, sample, y, [b for b in ns if b <= m], probe_train_frac, dense_probe))
        xs = sample.x[:cknna_samples].to(device, dtype)
        report["cknna"] = cknna(xs, sae.encode(xs), CKNNA_K) if xs.shape[0] > CKNNA_K else math.nan
    return report


# ---------------------------------------------------------------- method card
SOURCE_FIELDS = ("source_model", "layer", "pooling", "dataset", "split", "preprocessing")
PROVENANCE_FIELDS = (*SOURCE_FIELDS, "train_config")
NO_BACKBONE = "none (synthetic data)"
L2_NORMALISED = "the backbone's transform; embeddings L2-normalised"
AS_STORED = "the backbone's transform; embeddings as stored"


def card_source(backbone: dict[str, Any] | None, dataset: str, split: str,
                preprocessing: str | None = None) -> dict[str, Any]:
    """A method card's source fields (SOURCE_FIELDS) in the one vocabulary every card uses: the book's, the grid's
    and the command line's.

    backbone: a `Backbone.info()` or an embedding cache's manifest["backbone"]. Then source_model is its
    `backbones.describe` line, layer "image embedding", pooling the backbone's own words for it, and
    preprocessing L2_NORMALISED unless given. None: rows no backbone made (synthetic data), with source_model,
    layer and pooling NO_BACKBONE and preprocessing "none" unless given.
    """
    from ..backbones import describe

    if backbone is None:
        return {"source_model": NO_BACKBONE, "layer": NO_BACKBONE, "pooling": NO_BACKBONE, "dataset": dataset,
                "split": split, "preprocessing": preprocessing or "none"}
    return {"source_model": describe(backbone), "layer": "image embedding", "pooling": backbone["pooling"],
            "dataset": dataset, "split": split, "preprocessing": preprocessing or L2_NORMALISED}


SECTIONS = {"source": "Source", "sae": "SAE", "training": "Training", "metrics": "Metrics", "library": "Library"}


def _train_dict(cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return dict(cfg)
    raise TypeError(f"provenance['train_config'] must be a TrainConfig or a dict, got {type(cfg).__name__}")


def _auxk_settings(sae: SparseAutoencoder, cfg: dict[str, Any]) -> dict[str, Any]:
    """AuxK's settings as train() resolves them (the defaults in words where they depend on the data)."""
    from ..train import resolve_k_aux


    k_aux = resolve_k_aux(cfg.get("k_aux"), sae.d_in, sae.n_latents)
    dead_after = cfg.get("dead_after") or "min(10M, training rows)"
    return {"auxk_alpha": cfg.get("auxk_alpha"), "k_aux": k_aux, "dead_after": dead_after,
            "auxk_norm": cfg.get("auxk_norm", "input")}   # configs from before the setting were "input"


def _imported(sae: SparseAutoencoder) -> dict[str, Any]:
    """The card's record of an SAE read from another library (`sae.provenance`, set by st.load): one line each."""
    prov = getattr(sae, "provenance", None)
    if not prov:
        return {}
    version = f" {prov['library_version']}" if prov.get("library_version") else ""
    return {"imported_from": f"{prov['library']}{version}: {prov['foreign_class']} ({prov['format']}) at {prov['source']}",
            "import_rewrites": "; ".join(prov.get("rewrites") or []) or "none (same maths, weights verbatim)",
            "import_notes": "; ".join(prov.get("notes") or []) or "–"}


def _clean(v: Any) -> Any:
    """JSON-safe: NaN → None, tuples → lists, tensors/numpy scalars → Python numbers."""
    if isinstance(v, dict):
        return {str(key): _clean(val) for key, val in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def _curve(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{suffix: value} of the report keys `prefix<suffix>`, e.g. fvu_k16 → {"16": FVU}."""
    return {key[len(prefix):]: v for key, v in report.items() if key.startswith(prefix)}


def method_card(sae: SparseAutoencoder, report: dict[str, Any], provenance: dict[str, Any],
                out_dir: str | Path = ".") -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` in out_dir (atomically); returns their paths.

    provenance: source_model, layer, pooling, dataset, split, preprocessing, train_config (a TrainConfig or its
    dict); optional name (default: variant-hash), steps (trained), notes. report: `evaluate`'s dict.
    """
    from .. import __version__
    from ..train import default_lr

    require_sae(sae)
    missing = [f for f in PROVENANCE_FIELDS if f not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {missing}; a method card needs {list(PROVENANCE_FIELDS)}")
    cfg = _train_dict(provenance["train_config"])
    variant = type(sae).__name__
    blob = json.dumps(_clean({"variant": variant, "sae": sae.config(), "train": cfg}), sort_keys=True)
    config_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
    name = provenance.get("name") or f"{variant}-{config_hash}"
    lam_off, lam_rat = cfg.get("lambda_off", 0.0), cfg.get("lambda_ratio", 0.0)
    regs = [r for r, lam in (("off-support ℓ1", lam_off), ("ℓ1/ℓ2", lam_rat)) if lam]
    card = {
        "name": name,
        "source": {f: provenance[f] for f in SOURCE_FIELDS},
        "sae": {"variant": variant, **sae.config()},                  # d_in, n_latents, k, variant settings
        "training": {
            "regularizer": " + ".join(regs) or "none", "lambda_off": lam_off, "lambda_ratio": lam_rat,
            "mask": None if not regs else "batch-active units" if cfg.get("reg_mask", True) else "all units",
            "phi": cfg.get("reg_phi") if regs else None,
            **(_auxk_settings(sae, cfg) if sae.uses_auxk else {"auxk": "not used by this variant"}),
            "steps": provenance.get("steps", cfg.get("steps")),
            "epochs": cfg.get("epochs"), "batch_size": cfg.get("batch_size"),
            "lr": cfg.get("lr") or default_lr(sae.n_latents),
            "seed": cfg.get("seed"),
        },
        "metrics": {
            **{key: report.get(key) for key in ("n_samples", "fvu", "r2", "cosine", "l0", "dead", "dead_frac",
                                                "rare_frac", "ms_mean", "ms_max", "purity", "purity_weighted",
                                                "purity_chance", "cknna", "decoder_orthogonality")},
            "k_robustness_fvu": _curve(report, "fvu_k"), "probe_accuracy": _curve(report, "probe_"),
        },
        "library": {"sae_tutorial": __version__, "config_hash": config_hash, **_imported(sae)},
        "notes": provenance.get("notes", ""),
    }
    card = _clean(card)
    out = Path(out_dir)
    text = {"json": json.dumps(card, indent=2, ensure_ascii=False), "md": _markdown(card)}
    json_path, md_path = (atomic_write(out / f"{name}.{ext}", lambda tmp, t=t: tmp.write_text(t, encoding="utf-8"))
                          for ext, t in text.items())
    return json_path, md_path


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: one two-column table per section, one per curve."""
    lines = [f"# Method card: {card['name']}", ""]
    for section, title in SECTIONS.items():
        lines += [f"## {title}", "", "| field | value |", "|---|---|"]
        curves = {}
        for key, v in card[section].items():
            if isinstance(v, dict):
                curves[key] = v
            else:
                lines.append(f"| {key} | {_fmt(v)} |")
        for key, curve in curves.items():
            if not curve:
                lines += ["", f"**{key}**: not measured"]
                continue
            lines += ["", f"**{key}**", "", "| " + " | ".join(curve) + " |", "|" + "---|" * len(curve),
                      "| " + " | ".join(_fmt(v) for v in curve.values()) + " |"]
        lines.append("")
    if card["notes"]:
        lines += ["## Notes", "", card["notes"], ""]
    return "\n".join(lines)
