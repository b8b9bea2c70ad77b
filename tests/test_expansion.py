"""expansion_table on models the tests define, against spectra computed here independently:
the eigenvalues of the full bipartite adjacency [[0, B], [B^T, 0]] by numpy's eigvalsh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from expander_sweeps import expansion_table
from expander_sweeps.graphs.expansion import expansion_metrics


def reference(biadjacency: np.ndarray) -> dict:
    """lambda_1, lambda_2, d_avg and Delta_R of a bipartite graph, computed the long way: the
    whole symmetric adjacency of the graph without its isolated vertices, all eigenvalues."""
    b = np.asarray(biadjacency, dtype=np.float64)
    b = b[(b != 0).any(axis=1)][:, (b != 0).any(axis=0)]
    rows, cols = b.shape
    adjacency = np.zeros((rows + cols, rows + cols))
    adjacency[:rows, rows:] = b
    adjacency[rows:, :rows] = b.T
    values = np.sort(np.linalg.eigvalsh(adjacency))[::-1]
    d_avg = 2 * np.count_nonzero(b) / (rows + cols)
    if values[1] < 1e-9 * values[0]:  # rounding noise of a complete bipartite graph: lambda_2 = 0, unbounded
        values[1] = 0.0
    delta_r = (2 * math.sqrt(d_avg - 1) - values[1]) / values[1] if values[1] else math.inf
    return {"rows": rows, "cols": cols, "edges": int(np.count_nonzero(b)), "lambda_1": values[0],
            "lambda_2": values[1], "d_avg": d_avg, "delta_r": delta_r}


def check(row, expected: dict) -> None:
    for key in ("rows", "cols", "edges"):
        assert row[key] == expected[key], (row["matrix"], key)
    for key in ("lambda_1", "lambda_2", "d_avg", "delta_r"):
        assert row[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (row["matrix"], key)


def test_two_layer_gru_one_row_per_gate_block_read_from_prune_masks():
    torch.manual_seed(0)
    gru = nn.GRU(12, 20, num_layers=2)
    prune.random_unstructured(gru, "weight_hh_l0", amount=0.75)
    prune.l1_unstructured(gru, "weight_ih_l1", amount=0.6)
    table = expansion_table(gru, weightings=("binary",))
    expected_names = [f"weight_{kind}_l{layer}.{gate}" for layer in (0, 1) for kind in ("ih", "hh")
                      for gate in ("r", "z", "n")]
    assert list(table["matrix"]) == expected_names  # PyTorch's stacking order, pruned or not
    for row in table.to_dict("records"):
        mask = getattr(gru, f"{row['parameter']}_mask", None)
        full = mask if mask is not None else getattr(gru, row["parameter"]) != 0
        block = "rzn".index(row["gate"])
        b = full[20 * block:20 * (block + 1)].double().numpy()
        check(row, reference(b))
        assert row["density"] == pytest.approx(b.mean())
    hh0 = table[table["parameter"] == "weight_hh_l0"]
    assert hh0["density"].mean() == pytest.approx(0.25, abs=0.01)  # 75% pruned across the three gates
    assert (table[table["parameter"] == "weight_hh_l1"]["status"] == "unbounded").all()  # dense: lambda_2 = 0


def test_mlp_pruned_with_torch_prune_uses_the_mask_not_the_zeros_and_weights_on_it():
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(30, 24), nn.ReLU(), nn.Linear(24, 10))
    prune.l1_unstructured(mlp[0], "weight", amount=0.7)
    with torch.no_grad():  # a kept weight that happens to be exactly zero is still an edge of the mask
        kept = mlp[0].weight_mask.nonzero()[0]
        mlp[0].weight_orig[kept[0], kept[1]] = 0.0
    table = expansion_table(mlp)
    first = table[(table["matrix"] == "0.weight") & (table["weighting"] == "binary")].iloc[0]
    mask = mlp[0].weight_mask.numpy()
    check(first, reference(mask))
    assert first["edges"] == int(mask.sum()) == round(0.3 * 30 * 24)
    weighted = table[(table["matrix"] == "0.weight") & (table["weighting"] == "weighted")].iloc[0]
    # Weighted: |W_orig * mask| on the mask's support, normalised to mean 1 over its edges.
    w = np.abs((mlp[0].weight_orig * mlp[0].weight_mask).detach().double().numpy())
    assert weighted["edges"] == np.count_nonzero(w) == first["edges"] - 1
    w = w / w[w != 0].mean()
    assert weighted["lambda_2"] == pytest.approx(reference(w)["lambda_2"], rel=1e-9)
    assert list(table["matrix"].unique()) == ["0.weight", "2.weight"]


def test_conv_stack_is_the_channel_graph_summed_over_the_kernel_block_diagonal_by_group():
    torch.manual_seed(2)
    convs = nn.Sequential(nn.Conv1d(6, 8, kernel_size=5), nn.Conv1d(8, 12, kernel_size=3, groups=2),
                          nn.Conv2d(3, 7, kernel_size=(2, 2)))
    prune.random_unstructured(convs[0], "weight", amount=0.85)
    table = expansion_table(convs)
    binary = {r["matrix"]: r for r in table[table["weighting"] == "binary"].to_dict("records")}
    weighted = {r["matrix"]: r for r in table[table["weighting"] == "weighted"].to_dict("records")}
    # Conv1d 6 -> 8, pruned: an edge where any of the 5 taps survived.
    mask = convs[0].weight_mask.numpy()
    channel = mask.any(axis=2).astype(float)
    check(binary["0.weight"], reference(channel))
    summed = (np.abs(convs[0].weight.detach().double().numpy()) * mask).sum(axis=2)
    assert weighted["0.weight"]["lambda_1"] == pytest.approx(reference(summed / summed[summed != 0].mean())["lambda_1"])
    # Grouped conv 8 -> 12 in 2 groups: two complete blocks K_{6,4}, no edge across groups.
    grouped = binary["1.weight"]
    assert (grouped["rows"], grouped["cols"], grouped["edges"]) == (12, 8, 2 * 6 * 4)
    assert grouped["components"] == 2 and grouped["density"] == pytest.approx(0.5)
    assert grouped["lambda_1"] == pytest.approx(math.sqrt(24)) and grouped["lambda_2"] == pytest.approx(math.sqrt(24))
    check(binary["2.weight"], {**reference(np.ones((7, 3))), "lambda_2": 0.0, "delta_r": math.inf})
    assert binary["2.weight"]["status"] == "unbounded"


def test_metrics_have_every_key_with_undefined_and_unbounded_as_nan_and_marked():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0] = 1.0  # one edge: a degenerate graph, every bound undefined
    table = expansion_table(lin, weightings=("binary",))
    row = table.iloc[0]
    assert row["status"] == "undefined" and math.isnan(row["delta_r"])
    metrics = expansion_metrics(table)
    assert metrics["expansion/weight/binary/bounds_defined"] == 0.0
    assert metrics["expansion/weight/binary/bounds_unbounded"] == 0.0
    assert metrics["expansion/weight/binary/edges"] == 1.0
    assert math.isnan(metrics["expansion/weight/binary/delta_r"])
    dense = expansion_metrics(expansion_table(nn.Linear(4, 3), weightings=("binary",)))
    assert dense["expansion/weight/binary/bounds_unbounded"] == 1.0
    assert dense["expansion/weight/binary/bounds_defined"] == 1.0
    assert math.isnan(dense["expansion/weight/binary/delta_r"])  # +inf in the table, NaN as a metric
    assert sorted(dense) == sorted(metrics)  # the same keys whatever the graph
    assert not any(math.isinf(v) for v in [*metrics.values(), *dense.values()])


def test_bad_weightings_and_no_active_run_are_clear_errors():
    from expander_sweeps import log_expansion

    with pytest.raises(ValueError, match="weightings are 'binary' and 'weighted'"):
        expansion_table(nn.Linear(3, 3), weightings=("signed",))
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_expansion(nn.Linear(3, 3), step=0, wandb=False)
