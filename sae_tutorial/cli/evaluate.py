"""`python -m sae_tutorial evaluate SAE --data CACHE`: every metric of any SAE st.load reads, with its method card."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ._common import card_source, refuse_existing, report_table, staged


def add_parser(commands: Any) -> None:
    p = commands.add_parser("evaluate", help="run st.metrics.evaluate on an SAE (ours or another library's)",
                            description="Evaluate an SAE that st.load reads (an sae_tutorial folder or checkpoint, "
                                        "or an SAE of sparsify, SAELens, dictionary_learning or overcomplete) on "
                                        "cached embeddings: print a table, write report.json and the method card.")
    p.add_argument("sae", metavar="SAE", help="the SAE: a folder or file that st.load reads")
    p.add_argument("--data", required=True,
                   help="embedding cache folder or .pt/.npy/.safetensors file, of the SAE's input dimension")
    p.add_argument("--labels", help="class labels of the rows: a cache folder or a .pt/.npy/.safetensors file of "
                                    "(N,) ids or (N, C) 0/1 (default: the --data cache's own labels)")
    p.add_argument("--embeddings", help="another backbone's cache of the same images: the Monosemanticity Score is "
                                        "computed in its space (cross-model MS; default: the SAE's input space)")
    p.add_argument("--out", help="folder for report.json, method_card.json and README.md (default: "
                                 "<SAE>-eval-<data folder name> beside the SAE)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out that already holds files")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep the rows as stored (default: L2-normalise, as train does, unless the SAE's "
                        "train_config.json says it trained on rows as stored)")
    p.add_argument("--top-n", type=int, default=50, help="top images per latent for purity; latents firing on fewer "
                                                         "rows count as rare (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes' and CKNNA's row sample (default: 0)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(run=run)


def _train_config(path: Path) -> dict[str, Any]:
    """The folder's train_config.json (written by `train`), or {} for an SAE trained elsewhere."""
    from ..runs import TRAIN_CONFIG

    file = path / TRAIN_CONFIG if path.is_dir() else path.with_name(TRAIN_CONFIG)
    return json.loads(file.read_text()) if file.is_file() else {}


def run(args: argparse.Namespace) -> int:
    import torch

    from ..interop import detect, load
    from ..metrics import evaluate, method_card
    from ..runs import DATA, REPORT, read_labels, read_source, write_json

    if args.top_n <= 0:
        raise ValueError(f"--top-n must be > 0, got {args.top_n}")
    sae_path = Path(args.sae)
    if not sae_path.exists():
        raise FileNotFoundError(f"SAE {args.sae}: no such file or folder")
    out = Path(args.out) if args.out else sae_path.with_name(f"{sae_path.name}-eval-{Path(args.data).name}")
    refuse_existing(out, args.overwrite)
    library = detect(sae_path)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sae = load(sae_path).to(device)
    trained = _train_config(sae_path)
    normalize = not args.no_normalize and trained.get("normalize", True)
    data = read_source(args.data, normalize, "--data")
    if data.x.shape[1] != sae.d_in:
        raise ValueError(f"--data {args.data} holds rows of dimension {data.x.shape[1]}, but the SAE {args.sae} "
                         f"reads {sae.d_in}")
    labels = read_labels(args.labels, "--labels") if args.labels else data.labels
    if labels is not None and len(labels) != data.x.shape[0]:
        raise ValueError(f"--labels has {len(labels)} rows but --data has {data.x.shape[0]}")
    emb = None
    if args.embeddings:
        emb = read_source(args.embeddings, False, "--embeddings")
        if emb.x.shape[0] != data.x.shape[0]:
            raise ValueError(f"--embeddings {args.embeddings} has {emb.x.shape[0]} rows but --data has "
                             f"{data.x.shape[0]}: it must embed the same images, in the same order")
        same = [data.provenance.get("dataset"), emb.provenance.get("dataset")]
        if None not in same and same[0] != same[1]:
            raise ValueError(f"--embeddings {args.embeddings} embeds {same[1]['name']}/{same[1]['split']}, not the "
                             f"images of --data ({same[0]['name']}/{same[0]['split']})")
    report = evaluate(sae, data.x, labels=labels, embeddings=None if emb is None else emb.x, top_n=args.top_n,
                      seed=args.seed)
    space = "the SAE's input" if emb is None else (
        emb.provenance["backbone"]["name"] if emb.provenance["kind"] == "embedding cache" else args.embeddings)
    report["ms_space"] = f" (in {space} space)"
    record = {"sae": {"path": str(sae_path.resolve()), "library": library},
              "eval": {**data.provenance, "rows_used": data.x.shape[0]},
              "labels": str(Path(args.labels).resolve()) if args.labels else "the --data cache's own",
              "embeddings": None if emb is None else emb.provenance}
    split = f"eval: all {data.x.shape[0]} rows of {args.data}"
    if data.provenance["kind"] == "embedding cache":
        split = f"eval: all {data.x.shape[0]} rows of {data.provenance['dataset']['split']} ({args.data})"
    provenance = {**card_source(data, split), "train_config": trained.get("train_config", {}),
                  "name": "method_card",
                  "notes": f"Evaluated by `python -m sae_tutorial evaluate` ({library} SAE at {sae_path}); MS in "
                           f"{space} space." + ("" if trained else " Training settings: unknown (not recorded by "
                                                                    "sae_tutorial train).")}
    with staged(out, args.overwrite) as tmp, tempfile.TemporaryDirectory() as cards:
        card_json, card_md = method_card(sae, report, provenance, cards)
        (tmp / "method_card.json").write_bytes(card_json.read_bytes())
        (tmp / "README.md").write_bytes(card_md.read_bytes())
        write_json(tmp / DATA, record)
        write_json(tmp / REPORT, report)
    print(report_table(report, f"{type(sae).__name__} ({library}) on {report['n_samples']} rows of {args.data}:"))
    print(f"report and method card: {out}")
    return 0
