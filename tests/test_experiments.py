import pytest
import torch

import sae_tutorial as st
from sae_tutorial.experiments import compare_regularizers
from sae_tutorial.synthetic import make_sparse_data


def test_compare_regularizers_table():
    data = make_sparse_data(2048, 16, 48, avg_active=3, seed=0)
    cfg = st.TrainConfig(batch_size=128, steps=30, lr=3e-3, progress=False)
    table, models = compare_regularizers(data.x[:1536], data.x[1536:], n_latents=64, k=4, config=cfg,
                                         seeds=(0, 1), features=data.features, return_models=True)
    assert len(table) == 10 and len(models) == 10
    assert set(table.columns) >= {"method", "mask", "lambda", "seed", "fvu", "l0", "dead", "fvu_k/2", "fvu_2k",
                                  "recovered", "mean_max_cos", "seconds"}
    assert (table["l0"] <= 4 + 1e-6).all() and (table["fvu_k/2"] > table["fvu"]).all()
    # the table's FVU is the model's FVU on the evaluation data
    sae = models[("l1/l2", True, 1)]
    row = table[(table.method == "l1/l2") & (table["mask"] == True) & (table.seed == 1)].iloc[0]  # noqa: E712
    with torch.no_grad():
        assert row["fvu"] == pytest.approx(float(st.losses.fvu(data.x[1536:], sae(data.x[1536:]).x_hat)), rel=1e-5)
    with pytest.raises(ValueError, match="baseline"):
        compare_regularizers(data.x, n_latents=64, k=4, config=st.TrainConfig(lambda_off=0.1))
