"""What a trial records: one type per parameter key (W&B's config and parallel coordinates need
it), and attributes that optuna-dashboard can show (no 6,000-character list on every trial)."""

import pytest

from conftest import tiny_spec_dict
from expander_sweeps.spec import SweepSpec, spec_from_dict
from expander_sweeps.sweep.space import TrialPlan
from expander_sweeps.sweep.trial import trial_params


def test_clipping_is_a_word_and_its_norm_a_number_or_absent():
    plan = TrialPlan({"W_xh": 1.0, "W_hh": 0.5})
    off = trial_params(SweepSpec(name="s"), plan)
    on = trial_params(SweepSpec(name="s", training={"clip_grad_norm": 1.0}), plan)
    assert off["clipping"] == "off" and "clip_grad_norm" not in off
    assert on["clipping"] == "on" and on["clip_grad_norm"] == 1.0
    for key in set(off) & set(on):
        assert type(off[key]) is type(on[key]), key


@pytest.mark.slow
def test_metrics_are_known_by_name_not_listed_on_every_trial(tmp_path, mnist_dir):
    import expander_sweeps
    from expander_sweeps.sweep.study import read_result

    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": [1.0, 0.2]},
                                         tracking={"mlflow": {"enabled": False}}))
    study = expander_sweeps.launch(spec).study
    for trial in study.trials:
        assert "metric_names" not in trial.user_attrs
        assert max(len(str(v)) for k, v in trial.user_attrs.items() if k != "correct") < 1000
        metrics = read_result(trial, spec.run_path).metrics
        assert {"acc/clean", "n_test", "n_train", "W_hh/binary/delta_r"} <= set(metrics)
        assert "seconds" not in metrics and "group_size" not in metrics  # attributes, parameters
    # A trial an older version recorded, with its list: that list is what is read.
    older = study.trials[0]
    older.user_attrs["metric_names"] = ["acc/clean"]
    assert list(read_result(older, spec.run_path).metrics) == ["acc/clean"]
