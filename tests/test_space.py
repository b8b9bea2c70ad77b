"""The search space (space.py): grid plans, plan <-> Optuna parameters for every shipped spec,
agent arguments, and the W&B export of every schedule. Milliseconds, no training."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from expander_sweeps.spec import SweepSpec, load_spec
from expander_sweeps.sweep import space
from expander_sweeps.sweep.space import AgentArgumentError, TrialPlan

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "sweeps").rglob("*.yaml"))


def test_grid_plans_per_schedule():
    each = SweepSpec(name="a", masks={"remaining": [1.0, 0.5, 0.1]})
    plans = space.grid_plans(each)
    assert len(plans) == 5  # the all-dense point once, not once per layer
    assert plans[0].remaining == {"W_xh": 1.0, "W_hh": 1.0}
    tied = SweepSpec(name="a", masks={"remaining": [1.0, 0.5], "schedule": "tied"})
    assert [p.remaining for p in space.grid_plans(tied)] == [{"W_xh": 1.0, "W_hh": 1.0}, {"W_xh": 0.5, "W_hh": 0.5}]
    independent = SweepSpec(name="a", masks={"remaining": [1.0, 0.5], "schedule": "independent"},
                            noise={"at_training": True, "variances": [0.0, 0.3]})
    assert len(space.grid_plans(independent)) == 4 * 2


def test_grid_plans_cross_seeds_and_mask_methods_but_share_the_dense_point():
    spec = SweepSpec(name="a", training={"seed": [0, 1, 2]},
                     masks={"remaining": [1.0, 0.5, 0.1], "method": ["magnitude", "regular"]})
    plans = space.grid_plans(spec)
    # per seed: one dense trial + 2 layers x 2 fractions x 2 methods
    assert len(plans) == 3 * (1 + 2 * 2 * 2)
    dense = [p for p in plans if not p.pruned_layers]
    assert [(p.seed, p.mask_method) for p in dense] == [(0, "magnitude"), (1, "magnitude"), (2, "magnitude")]
    assert {p.mask_method for p in plans if p.pruned_layers} == {"magnitude", "regular"}
    assert set(space.params_of(plans[1], spec)) == {"layer", "remaining", "mask_method", "seed"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO / "sweeps")))
def test_every_grid_plan_survives_the_round_trip_through_optuna_parameters(path):
    spec = load_spec(path)
    plans = space.grid_plans(spec)
    assert plans, "a shipped grid has points"
    seen = set()
    for plan in plans:
        params = space.params_of(plan, spec)
        assert space.plan_of(params, spec) == plan
        key = tuple(sorted(params.items()))
        assert key not in seen, f"two plans share the parameters {params}"
        seen.add(key)


@pytest.mark.parametrize("schedule", ["each", "tied", "independent"])
def test_round_trip_with_seeds_methods_and_training_noise(schedule):
    spec = SweepSpec(name="a", training={"seed": [3, 4]}, masks={"remaining": [1.0, 0.3, 0.05], "schedule": schedule,
                                                                  "method": ["magnitude", "regular"]},
                     noise={"at_training": True, "variances": [0.0, 0.6]})
    for plan in space.grid_plans(spec):
        assert space.plan_of(space.params_of(plan, spec), spec) == plan


def test_non_grid_samplers_suggest_plans_from_the_space():
    spec = SweepSpec(name="a", study={"sampler": "tpe", "n_trials": 5},
                     masks={"remaining": {"low": 0.05, "high": 1.0}, "schedule": "tied"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    plan = space.suggest_plan(study.ask(), spec)
    assert 0.05 <= plan.remaining["W_xh"] == plan.remaining["W_hh"] <= 1.0


@pytest.mark.parametrize("schedule", ["each", "independent"])
def test_grid_fractions_are_a_log_scale_distribution_but_an_older_linear_study_keeps_its_scale(schedule):
    from expander_sweeps.sweep.study import fractions_on_log_scale

    spec = SweepSpec(name="a", masks={"remaining": [1.0, 0.3, 0.05], "schedule": schedule})
    plans = space.grid_plans(spec)
    study = optuna.create_study()
    assert fractions_on_log_scale(study)  # a new study
    for plan in plans:
        study.enqueue_trial(space.params_of(plan, spec))
    trial = study.ask()
    assert space.suggest_plan(trial, spec, fractions_on_log_scale(study)) == plans[0]
    names = [n for n in trial.distributions if n.startswith("remaining")]
    assert names and all(trial.distributions[n].log and trial.distributions[n].high == 1.0 for n in names)
    # The low end is the grid's smallest fraction: optuna-dashboard's axes span what was swept.
    assert all(trial.distributions[n].low == 0.05 for n in names)
    study.tell(trial, 0.5)
    assert fractions_on_log_scale(study)
    # A grid extended with a smaller fraction: Optuna takes the wider range in the same study.
    wider = SweepSpec(name="a", masks={"remaining": [1.0, 0.3, 0.05, 0.001], "schedule": schedule})
    study.enqueue_trial(space.params_of(space.grid_plans(wider)[-1], wider))
    extended = study.ask()
    while extended.number != len(plans):  # the enqueued points first, the new one last
        space.suggest_plan(extended, spec, True)
        study.tell(extended, 0.5)
        extended = study.ask()
    assert space.suggest_plan(extended, wider, True) == space.grid_plans(wider)[-1]
    study.tell(extended, 0.5)

    # A study whose trials recorded linear (0, 1] fractions keeps them: Optuna refuses a switch.
    older = optuna.create_study()
    for plan in plans:
        older.enqueue_trial(space.params_of(plan, spec))
    first = older.ask()
    space.suggest_plan(first, spec, log_scale=False)
    older.tell(first, 0.5)
    assert not fractions_on_log_scale(older)
    second = older.ask()
    with pytest.raises(ValueError, match="log configuration"):  # what happened without the check
        space.suggest_plan(second, spec, log_scale=True)
    assert space.suggest_plan(second, spec, fractions_on_log_scale(older)) == plans[1]


def test_the_dense_trial_has_no_layer_and_an_older_study_s_dense_trial_is_still_the_dense_point():
    from expander_sweeps.sweep.study import enqueue_grid, sweep_progress

    spec = SweepSpec(name="a", masks={"remaining": [1.0, 0.3]})
    study = optuna.create_study()
    enqueue_grid(study, spec)
    trial = study.ask()
    assert space.suggest_plan(trial, spec).pruned_layers == [] and trial.params == {"remaining": 1.0}
    study.tell(trial, 0.9)
    # A study begun by an earlier version recorded its dense trial as layer=W_xh at 100%.
    older = optuna.create_study()
    older.enqueue_trial({"layer": "W_xh", "remaining": 1.0})
    first = older.ask()
    first.suggest_categorical("layer", ["W_xh", "W_hh"])
    first.suggest_float("remaining", 0.0, 1.0)
    older.tell(first, 0.9)
    assert space.point_key(first.params, spec) == space.point_key({"remaining": 1.0}, spec)
    enqueue_grid(older, spec)  # the dense point is not enqueued again
    waiting = older.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["layer"] for t in waiting) == ["W_hh", "W_xh"]
    assert sweep_progress(older, spec) == (1, 3)


def test_agent_arguments_become_canonical_points():
    spec = SweepSpec(name="a", training={"seed": [0, 1]},
                     masks={"remaining": [1.0, 0.5], "method": ["magnitude", "regular"]})
    point = space.agent_point(["--layer=W_hh", "--remaining=0.5", "--mask_method=regular", "--seed=1"], spec)
    assert point == {"layer": "W_hh", "remaining": 0.5, "mask_method": "regular", "seed": 1}
    # The all-dense point is one trial, whichever layer and method the agent drew.
    dense = space.agent_point(["--layer=W_hh", "--remaining=1.0", "--mask_method=regular", "--seed=0"], spec)
    assert dense == {"remaining": 1.0, "mask_method": "magnitude", "seed": 0}  # no layer is pruned
    assert space.plan_of(dense, spec) == TrialPlan({"W_xh": 1.0, "W_hh": 1.0}, 0.0, "magnitude", 0)
    with pytest.raises(AgentArgumentError, match="--name=value"):
        space.agent_point(["remaining"], spec)
    with pytest.raises(AgentArgumentError, match="must be a number, but got 'half'"):
        space.agent_point(["--remaining=half"], spec)
    with pytest.raises(AgentArgumentError, match="parameters are"):
        space.agent_point(["--remaining=0.5"], spec)


@pytest.mark.parametrize("schedule,expected", [
    ("each", {"layer", "remaining"}),
    ("tied", {"remaining"}),
    ("independent", {"remaining_W_xh", "remaining_W_hh"}),
])
def test_wandb_export_of_every_schedule(schedule, expected):
    spec = SweepSpec(name="a", training={"seed": [0, 1]},
                     masks={"remaining": [1.0, 0.5, 0.1], "schedule": schedule, "method": ["magnitude", "regular"]})
    config = space.wandb_sweep_config(spec, "sweeps/a.yaml")
    assert config["method"] == "grid" and config["metric"] == {"name": "acc/clean", "goal": "maximize"}
    assert config["command"][2:4] == ["agent-trial", "sweeps/a.yaml"]
    # A grid is one W&B parameter whose values are the study's distinct points, each once: the
    # all-dense point once per seed (not once per layer and method, as a product would have it).
    assert set(config["parameters"]) == {"point"}
    labels = config["parameters"]["point"]["values"]
    plans = space.grid_plans(spec)
    assert len(labels) == len(set(labels)) == len(plans)
    parsed = [dict(part.split("=") for part in label.split(",")) for label in labels]
    dense = [p for p in parsed if all(float(v) == 1.0 for k, v in p.items() if k.startswith("remaining"))]
    assert sorted(p["seed"] for p in dense) == ["0", "1"]  # once per seed
    # What an agent passes back is that very point.
    for label, plan in zip(labels, plans, strict=True):
        point = space.agent_point([f"--point={label}"], spec)
        names = expected - {"layer"} if not plan.pruned_layers else expected  # dense: no layer
        assert set(point) == names | {"mask_method", "seed"} and space.plan_of(point, spec) == plan
    sampled = SweepSpec(name="a", study={"sampler": "tpe", "n_trials": 7},
                        masks={"remaining": {"low": 0.01, "high": 1.0}, "schedule": schedule})
    exported = space.wandb_sweep_config(sampled, "a.yaml")
    assert set(exported["parameters"]) == expected  # sampled: one W&B parameter per dimension
    assert exported["method"] == "bayes" and exported["run_cap"] == 7
    assert exported["program"] == "expander-sweeps" and "description" not in exported


def test_wandb_export_of_a_multi_objective_study_says_what_it_leaves_out():
    spec = SweepSpec(name="a", study={"sampler": "nsga2", "n_trials": 9, "objectives": ["accuracy", "remaining_edges"]},
                     masks={"remaining": {"low": 0.01, "high": 1.0}})
    config = space.wandb_sweep_config(spec, "a.yaml")
    assert config["metric"] == {"name": "acc/clean", "goal": "maximize"}
    assert "remaining_edges" in config["description"] and "acc/clean only" in config["description"]


def test_wandb_export_with_overrides_hands_the_agents_the_resolved_spec(tmp_path):
    import yaml
    from click.testing import CliRunner

    from expander_sweeps.cli import main
    from expander_sweeps.spec import load_spec

    out = tmp_path / "sweep.yaml"
    result = CliRunner().invoke(main, ["export", "wandb", "sweeps/quickstart.yaml", "-o", str(out),
                                       "--set", "data.root=/data/mnist", "--set", "training.epochs=3",
                                       "--set", "masks.remaining=[1.0, 0.5]"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    resolved = config["command"][3]
    assert resolved == str(tmp_path / "sweep.spec.yaml")
    spec = load_spec(resolved)  # what every agent will run
    assert spec.data.root == "/data/mnist" and spec.training.epochs == 3 and spec.masks.remaining == [1.0, 0.5]
    assert config["parameters"]["point"]["values"] == [
        "remaining=1.0", "layer=W_xh,remaining=0.5", "layer=W_hh,remaining=0.5"]


@pytest.mark.slow
def test_a_mask_method_added_to_the_tool_leaves_an_existing_study_relaunchable(tmp_path, mnist_dir):
    """A study begun with today's methods; then the tool learns a fifth (Optuna refuses a changed
    categorical within a study: "does not support dynamic value space"). Extending the study's
    grid still runs, reruns nothing, and asking for the new method there is one clear error.
    The new method is registered as a plug-in would (mask_methods.register_mask_method)."""
    from conftest import tiny_spec_dict
    from expander_sweeps.spec import spec_from_dict
    from expander_sweeps.sweep.loop import launch_study
    from expander_sweeps.sweep.study import SpecMismatch

    def spec(fractions, methods):
        return spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": fractions, "method": methods},
                                             training={"epochs": 1, "finetune_epochs": 1},
                                             tracking={"mlflow": {"enabled": False}}))

    from expander_sweeps.plugins import (
        MaskMethod,
        mask_method,
        register_mask_method,
        unregister_mask_method,
    )

    first = launch_study(spec([1.0, 0.3], ["magnitude", "random"]))  # today's methods
    assert first.ran == 5 and first.failed == 0
    # The tool learns a fifth method (a random mask under another name is enough here).
    register_mask_method(MaskMethod("random_again", mask_method("random").make, "test-only"))
    try:
        assert "random_again" in space.mask_method_names()
        again = launch_study(spec([1.0, 0.3], ["magnitude", "random"]))
        assert again.ran == 0 and again.failed == 0  # relaunch: loads, reruns nothing
        extended = launch_study(spec([1.0, 0.3, 0.1], ["magnitude", "random"]), extend=True)
        assert extended.ran == 4 and extended.failed == 0  # the new fraction's points only
        numbers = [t.number for t in extended.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(numbers) == 9 == len(set(numbers))
        with pytest.raises(SpecMismatch, match="began before the mask method"):
            launch_study(spec([1.0, 0.3], ["magnitude", "random_again"]), extend=True)
    finally:
        unregister_mask_method("random_again")
