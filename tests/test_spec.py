import json

import pytest

from expander_sweeps.spec import SpecError, SweepSpec, load_spec


def _error(path, overrides=()) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return str(info.value)


def test_shipped_specs_are_valid():
    quick = load_spec("sweeps/quickstart.yaml")
    assert load_spec("sweeps/speech_noise.yaml").data.seq_len == 400
    assert load_spec("sweeps/fsdd_quick.yaml").model.cell == "lstm"
    full = load_spec("sweeps/mnist_noise.yaml")
    assert full.training.epochs == 20 and full.training.finetune_epochs == 20
    assert full.training.lr == 0.001 and full.training.batch_size == 128
    assert full.model.init == "kaiming_uniform"
    assert max(full.masks.remaining) == 1.0 and min(full.masks.remaining) == 0.01
    assert full.noise.fraction == 0.2 and full.noise.variances == [0.15, 0.3, 0.45, 0.6]
    assert quick.name == "quickstart"


def test_unknown_key_names_path_and_line(write_spec):
    path = write_spec("name: x\nmodel:\n  cell: rnn\n  hiden: 64\n")
    message = _error(path)
    assert "model.hiden (line 4)" in message
    assert "unknown key" in message


def test_bad_enum_value_lists_what_is_allowed(write_spec):
    path = write_spec("name: x\nmodel:\n  cell: transformer\n")
    message = _error(path)
    assert "model.cell (line 3)" in message
    assert "'transformer'" in message
    assert "'rnn'" in message and "'lstm'" in message


def test_out_of_range_fraction_in_a_list(write_spec):
    path = write_spec("name: x\nmasks:\n  remaining:\n    - 1.0\n    - 5\n")
    message = _error(path)
    assert "masks.remaining (line 3)" in message
    assert "(0, 1]" in message and "[5" in message


def test_wrong_type_and_several_errors_at_once(write_spec):
    path = write_spec("name: x\ntraining:\n  epochs: many\n  lr: -1\n")
    message = _error(path)
    assert "2 problem(s)" in message
    assert "training.epochs (line 3)" in message and "'many'" in message
    assert "training.lr (line 4)" in message and "greater than 0" in message


def test_missing_name_and_yaml_syntax_error(write_spec):
    assert "name (missing at the top level): this field is required" in _error(write_spec("model:\n  cell: rnn\n", "a.yaml"))
    message = _error(write_spec("name: x\nmodel: [unclosed\n", "b.yaml"))
    assert "not valid YAML at line" in message


def test_not_a_mapping_and_missing_file(write_spec, tmp_path):
    assert "must be a mapping" in _error(write_spec("- a\n- b\n"))
    assert "no such spec file" in _error(tmp_path / "nope.yaml")


def test_cross_field_rule_grid_needs_a_list(write_spec):
    path = write_spec("name: x\nmasks:\n  remaining: {low: 0.01, high: 1.0}\n")
    assert "needs a list of fractions" in _error(path)
    ok = load_spec(path, ["study.sampler=tpe", "study.n_trials=5"])
    assert ok.masks.remaining.low == 0.01


def test_set_overrides_parse_yaml_values_and_report_their_source(write_spec):
    path = write_spec("name: x\n")
    spec = load_spec(path, ["training.epochs=3", "masks.remaining=[1.0, 0.5]", "data.root=/d"])
    assert spec.training.epochs == 3 and spec.masks.remaining == [1.0, 0.5]
    assert spec.data.root == "/d"
    message = _error(path, ["model.hidden=-4"])
    assert "model.hidden (from --set)" in message and "-4" in message
    assert "KEY=VALUE" in _error(path, ["model.hidden"])
    assert "is a value" in _error(path, ["name.first=3"])


def test_schema_is_json_with_descriptions():
    from expander_sweeps.spec import json_schema

    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    assert "name" in schema["required"]
    noise = schema["$defs"]["NoiseSpec"]["properties"]["variances"]
    assert "VARIANCE" in noise["description"]


def test_data_section_errors_name_the_dataset_field(write_spec):
    message = _error(write_spec("name: x\ndata:\n  dataset: speech\n", "a.yaml"))
    assert "data.dataset (line 3): unknown dataset 'speech'; allowed: mnist, speech_commands, fsdd" in message
    message = _error(write_spec("name: x\ndata:\n  dataset: fsdd\n  sequence: rows\n", "b.yaml"))
    assert "data.root (missing from the section at line 2)" in message
    assert "data.sequence (line 4): unknown key" in message
    spec = load_spec(write_spec("name: x\ndata:\n  dataset: fsdd\n  root: /r\n", "c.yaml"))
    assert spec.data.seq_len == 400 and spec.data.align == "end"
    assert load_spec(write_spec("name: x\ndata:\n  root: /m\n", "d.yaml")).data.dataset == "mnist"


def test_mask_methods_and_seeds_may_be_lists(write_spec):
    spec = load_spec("sweeps/mnist_expander_vs_magnitude.yaml")
    assert spec.masks.methods == ["magnitude", "regular"]
    assert spec.training.seeds == [0, 1, 2]
    assert spec.spectral.graphs == ["layer", "step", "unrolled"]
    one = spec.for_trial(2, "regular")
    assert one.training.seed == 2 and one.masks.method == "regular"
    assert spec.training.seed == [0, 1, 2]  # the sweep's spec is left as it was
    quick = load_spec("sweeps/quickstart.yaml")
    assert quick.masks.methods == ["magnitude"] and quick.training.seeds == [0]


def test_bad_mask_method_and_repeated_seeds_are_explained(write_spec):
    path = write_spec({"name": "x", "masks": {"method": ["magnitude", "expander"]}})
    message = _error(path)
    assert "masks.method" in message and "expander" in message and "regular" in message
    path = write_spec({"name": "x", "training": {"seed": [1, 1]}})
    assert "distinct" in _error(path)
    path = write_spec({"name": "x", "report": {"drop_threshold": 5}})
    assert "report.drop_threshold" in _error(path)


def test_redact_url_hides_passwords_in_the_address_and_the_query():
    from expander_sweeps.spec import redact_url

    cases = {
        "sqlite:///x.db?password=SECRET": "sqlite:///x.db?password=***",
        "postgresql+psycopg://bob:SECRET@h:5432/db?sslmode=require&password=SECRET":
            "postgresql+psycopg://bob:***@h:5432/db?sslmode=require&password=***",
        "http://alice:SE/CRET@host:5000": "http://alice:***@host:5000",
        "https://h/api?token=SECRET&x=1": "https://h/api?token=***&x=1",
        "http://127.0.0.1:5000": "http://127.0.0.1:5000",
        "sqlite:////tmp/a@b/x.db": "sqlite:////tmp/a@b/x.db",
    }
    for url, redacted in cases.items():
        assert redact_url(url) == redacted


def test_python_api_report_without_a_study_says_so_and_creates_nothing(tmp_path, monkeypatch):
    import expander_sweeps
    from expander_sweeps.spec import SweepSpec

    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(name="nothing_here", run_dir="runs/x")
    with pytest.raises(expander_sweeps.NoStudyError, match="no study named 'nothing_here'.*launch the sweep first"):
        expander_sweeps.report(spec)
    assert not (tmp_path / "runs").exists()  # no empty optuna.db left behind


def test_wandb_system_metrics_are_a_switch_off_by_default(tmp_path):
    pytest.importorskip("wandb")
    from expander_sweeps.tracking.wandb_backend import WandbTracker

    off = SweepSpec(name="a", run_dir=str(tmp_path))
    on = SweepSpec(name="a", run_dir=str(tmp_path), tracking={"wandb": {"system_metrics": True}})
    assert off.tracking.wandb.system_metrics is False
    assert WandbTracker(off).settings().x_disable_stats is True
    assert WandbTracker(on).settings().x_disable_stats is False


def test_lending_a_thread_to_the_trackers_is_off_by_default(tmp_path):
    """It trades bit-for-bit reproducibility for speed (README): the user must ask for it."""
    assert SweepSpec(name="a", run_dir=str(tmp_path)).tracking.lend_thread is False
    assert SweepSpec(name="a", run_dir=str(tmp_path), tracking={"lend_thread": True}).tracking.lend_thread is True


def test_the_trackers_lag_limit_is_a_minute_by_default_and_must_be_positive(tmp_path, write_spec):
    assert SweepSpec(name="a", run_dir=str(tmp_path)).tracking.max_lag_seconds == 60.0
    # W&B's init waits for a core up to that long on top of its own 90 s.
    from expander_sweeps.tracking.wandb_backend import WandbTracker

    patient = SweepSpec(name="a", run_dir=str(tmp_path), tracking={"max_lag_seconds": 300})
    assert WandbTracker(patient).settings().init_timeout == 390.0
    with pytest.raises(SpecError) as raised:
        load_spec(write_spec({"name": "a", "tracking": {"max_lag_seconds": 0}}))
    assert "tracking.max_lag_seconds" in str(raised.value) and "greater than 0" in str(raised.value)


def _fails_with(path, *words):
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert all(w in message for w in words), message
    return message


def test_a_spec_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    _fails_with(path, "not UTF-8", "0xe9", "offset 9")


def test_deep_nesting_and_alias_bombs_are_refused_before_they_cost_memory(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nmodel:\n  args:\n    a: " + "[" * 20000 + "]" * 20000 + "\n")
    _fails_with(deep, "nest")
    bomb = tmp_path / "bomb.yaml"
    lines = ["name: x", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 9)]
    lines += ["model:", "  args:", "    x: *a8"]
    bomb.write_text("\n".join(lines) + "\n")
    _fails_with(bomb, "more than 100,000 values")


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\nmodel:\n  hidden: 32\n  hidden: 64\n")
    _fails_with(path, "'hidden' is written twice", "first at line 3", "line 4")


def test_a_leading_zero_is_not_read_as_octal(tmp_path):
    path = tmp_path / "octal.yaml"
    path.write_text("name: x\nmodel:\n  hidden: 0100\n")
    _fails_with(path, "0100 has a leading zero", "(64)", "line 3")


@pytest.mark.parametrize("where", ["/etc", "/dev/null", "a_file"])
def test_run_dir_must_be_a_folder_this_tool_can_own(tmp_path, where):
    if where == "a_file":
        where = tmp_path / "notes.txt"
        where.write_text("mine")
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: x\nrun_dir: {where}\n")
    _fails_with(path, "run_dir:", "choose a new or empty folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "optuna.db").write_bytes(b"")
    (tmp_path / "run" / "my notes.md").write_text("a user's own file beside the run")
    path.write_text(f"name: x\nrun_dir: {tmp_path / 'run'}\n")
    assert load_spec(path).run_path == tmp_path / "run"
