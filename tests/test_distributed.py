"""Data-parallel training (torch.distributed, gloo on CPU): 2 ranks match one process with the same global batch."""
import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sae_tutorial as st
from sae_tutorial.synthetic import make_sparse_data

CFG = dict(batch_size=128, steps=20, lr=3e-3, warmup_steps=5, dead_after=256, log_every=5, progress=False,
           lambda_off=0.01, lambda_ratio=0.003)


def _data():
    return make_sparse_data(2048, 16, 48, avg_active=3, seed=0).x


VARIANTS = {"TopKSAE": CFG, "BatchTopKSAE": {k: v for k, v in CFG.items() if not k.startswith("lambda")}}


def _sae(variant: str = "TopKSAE"):
    sae = getattr(st, variant)(16, 96, 3, seed=0)
    with torch.no_grad():
        sae.b_enc[:32] -= 2.0           # some latents start dead, so AuxK and the dead counters are exercised
    return sae


def _worker(rank: int, world: int, port: int, out: str, ckpt: str | None, variant: str = "TopKSAE") -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        sae = _sae(variant)
        hist = st.train(sae, _data(), st.TrainConfig(**VARIANTS[variant], checkpoint_dir=ckpt))
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"hist": hist, "W_dec": sae.W_dec.tolist(), "state": {
                    k: v.tolist() for k, v in sae.state_dict().items()}}, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world: int, out, ckpt=None, variant: str = "TopKSAE"):
    mp.spawn(_worker, args=(world, _free_port(), str(out), ckpt, variant), nprocs=world, join=True)
    return json.loads(out.read_text())


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_ranks_match_one_process(tmp_path, variant):
    """BatchTopK included: its top B·k and its threshold θ are those of the global batch."""
    torch.set_num_threads(1)
    single = _sae(variant)
    h1 = st.train(single, _data(), st.TrainConfig(**VARIANTS[variant]))
    two = _run(2, tmp_path / "two.json", variant=variant)
    h2 = two["hist"]
    assert max(h1["auxk"]) > 0, "the test should exercise AuxK"
    for key in ("loss", "fvu", "auxk", "r_off", "r_ratio", "l0", "dead_frac"):
        for a, b in zip(h1[key], h2[key]):
            assert abs(a - b) <= 1e-5 * max(abs(a), 1e-3), (key, a, b)
    for name, value in single.state_dict().items():          # weights, and BatchTopK's θ (a min: exact)
        tol = dict(rtol=1e-6, atol=1e-7) if name.startswith("threshold") else dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.tensor(two["state"][name], dtype=value.dtype), value, msg=name, **tol)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_rank_zero_checkpoint_resumes_in_one_process(tmp_path):
    """Only rank 0 writes; the checkpoint of a 2-rank run resumes on 1 process (resume works for any N)."""
    _run(2, tmp_path / "two.json", str(tmp_path / "ckpt"))
    state = torch.load(tmp_path / "ckpt" / "train_state.pt", weights_only=True)
    assert state["step"] == CFG["steps"]
    resumed = st.TopKSAE(16, 96, 3, seed=5)
    hist = st.train(resumed, _data(), st.TrainConfig(**{**CFG, "steps": 25}, checkpoint_dir=str(tmp_path / "ckpt")))
    assert hist["step"] == list(range(25))
