"""Extraction cost (st.costs): the FLOP counts against the transformer's closed form, the device rate's
arithmetic, and clear errors."""
import pytest

import sae_tutorial as st

# ViT-L/16 at 224 px: T = 196 patches + CLS, width w = 1024, MLP 4w, 24 blocks, no classifier head
T, W, DEPTH, PATCH_IN = 197, 1024, 24, 3 * 16 * 16


def block_flops(tokens: int = T, width: int = W) -> int:
    """One pre-norm block, a multiply-add counted 2: qkv 3w², out-projection w², MLP 2·4w² per token (2·12·T·w²),
    and the attention products QKᵀ and AV (2·2·T²·w); norms and activations are not counted."""
    return 2 * 12 * tokens * width**2 + 2 * 2 * tokens**2 * width


def test_flop_profile_matches_the_closed_form():
    profile = st.costs.flop_profile("vit-l-16")
    patch_embedding = 2 * (T - 1) * PATCH_IN * W
    assert profile["GFLOP / image"] * 1e9 == DEPTH * block_flops() + patch_embedding
    assert profile["embedding d"] == W and profile["input"] == "3×224×224"
    assert round(profile["parameters (M)"]) == 303
    assert profile["pretrained tag"] == st.backbones.SPECS["vit-l-16"].tag


def test_block_flop_rate_counts_the_attention_too():
    """The block's FLOPs are counted on the meta device: on a CPU the real block's fused attention kernel is
    invisible to FlopCounterMode, which would undercount by the attention products."""
    measured = st.costs.block_flop_rate("cpu", batch=2, repeats=1)
    assert measured["tokens"] == (2, T, W)
    assert measured["flops"] == 2 * block_flops()
    assert measured["seconds"] > 0 and measured["rate"] == measured["flops"] / measured["seconds"]


def test_block_flop_rate_needs_a_timm_vit():
    with pytest.raises(ValueError, match="timm VisionTransformer.*open_clip"):
        st.costs.block_flop_rate(name="clip-vit-l-14")


def test_extraction_hours():
    # 3,600 images of 1 GFLOP at 1 GFLOP/s: one hour
    assert st.costs.extraction_hours(3600, 1.0, 1e9) == pytest.approx(1.0)
