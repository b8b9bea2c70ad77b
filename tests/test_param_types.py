"""A trial's parameters keep one type per key (W&B's config and parallel coordinates need it)."""

from expander_sweeps.space import TrialPlan
from expander_sweeps.spec import SweepSpec
from expander_sweeps.trial import trial_params


def test_clipping_is_a_word_and_its_norm_a_number_or_absent():
    plan = TrialPlan({"W_xh": 1.0, "W_hh": 0.5})
    off = trial_params(SweepSpec(name="s"), plan)
    on = trial_params(SweepSpec(name="s", training={"clip_grad_norm": 1.0}), plan)
    assert off["clipping"] == "off" and "clip_grad_norm" not in off
    assert on["clipping"] == "on" and on["clip_grad_norm"] == 1.0
    for key in set(off) & set(on):
        assert type(off[key]) is type(on[key]), key
