"""Evaluation metrics (design.md §5). Each function states its formula; each is tested against a slow reference.

    reconstruction  fvu, r2, cosine, l0, dead_latents, decoder_orthogonality, k_robustness
    semantics       monosemanticity (+ alive_mean, alive_max), class_purity, purity_chance
    controls        frequent_latents, rare_latents, controlled_means, purity_chance_curve, matched_chance
    alignment       linear_probe, truncated_probe, concept_classification, cknna, matched_cosines, seed_stability
    report          evaluate (every metric in one pass, a flat dict), method_card (JSON + Markdown) and
                    card_source (its source fields, in one vocabulary)

Every `acts`/`codes`/`data`/`embeddings` argument is an in-memory (N, ·) matrix or an iterable of (B, ·) chunks,
read once (see _stream.py): N can exceed memory. Nothing allocates an N × N or N × m float64 buffer.
"""
from .controls import controlled_means, frequent_latents, matched_chance, purity_chance_curve, rare_latents
from .alignment import cknna, concept_classification, linear_probe, matched_cosines, seed_stability, truncated_probe
from .reconstruction import cosine, dead_latents, decoder_orthogonality, fvu, k_robustness, l0, r2
from .report import card_source, evaluate, method_card
from .semantics import alive_max, alive_mean, class_purity, monosemanticity, purity_chance

__all__ = ["fvu", "r2", "cosine", "l0", "dead_latents", "decoder_orthogonality", "k_robustness",
           "monosemanticity", "alive_mean", "alive_max", "class_purity", "purity_chance",
           "frequent_latents", "rare_latents", "controlled_means", "purity_chance_curve", "matched_chance",
           "linear_probe", "truncated_probe", "concept_classification", "cknna", "matched_cosines", "seed_stability",
           "card_source", "evaluate", "method_card"]
