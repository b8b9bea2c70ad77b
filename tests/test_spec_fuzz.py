"""Spec fuzzing: every shipped spec mutated hundreds of ways (keys deleted, renamed, added; values
retyped, made non-finite, huge, negative, empty). A mutation is either rejected with one line per
problem naming the field and its line, or accepted because it is a valid spec: never a
traceback, never a value that validation took but a run cannot use."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from expander_sweeps.cli import main
from expander_sweeps.spec import SpecError, load_spec

SPECS = sorted(Path(__file__).resolve().parents[1].glob("sweeps/**/*.yaml"))
PER_SPEC = 200

# What a user might type in the wrong place; the issue's reproductions among them.
ODD_VALUES = [[], {}, "text", "", True, False, None, 1e30, 1e308, -1, 0, 2**64, math.inf, -math.inf, math.nan,
              "x" * 5000, [1, "a"], ["magnitude"], {"low": 0.1}, 0.5, [True], [math.inf], "[/x]"]
LINE = r"^  - (\(top level\)|[A-Za-z_][\w.]*) \((line \d+|missing from the section at line \d+|missing at the top level)\): \S"


def _paths(tree, prefix=()):
    """Every key path of a mapping, sections and leaves alike (list elements too)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _parent(tree, path):
    for part in path[:-1]:
        tree = tree[part]
    return tree


def _mutate(raw: dict, rng: random.Random) -> tuple[dict, str, tuple, object]:
    """One mutation of a copy of raw: (mutated, kind, path, injected value or None)."""
    import copy

    tree = copy.deepcopy(raw)
    paths = list(_paths(tree))
    path = rng.choice(paths)
    parent = _parent(tree, path)
    kind = rng.choice(["delete", "retype", "retype", "retype", "rename", "unknown"])
    if kind == "delete":
        if isinstance(parent, list):
            parent.pop(path[-1])
        else:
            del parent[path[-1]]
        return tree, kind, path, None
    if kind == "rename" and isinstance(parent, dict):
        parent[f"{path[-1]}_x"] = parent.pop(path[-1])
        return tree, kind, path, None
    if kind == "unknown" and isinstance(parent, dict):
        parent["surprise_key"] = 1
        return tree, kind, path, None
    value = rng.choice(ODD_VALUES)
    parent[path[-1]] = value
    return tree, "retype", path, value


def _dig(dumped: dict, path: tuple):
    node = dumped
    for part in path:
        node = node[part]
    return node


def _accepted_invalid(spec, path: tuple, value) -> str | None:
    """Why an accepted mutation should have been refused, or None if the spec is really valid.
    Independent of the spec's own rules: a value that was coerced, is non-finite, is a bool
    standing for a number, an empty path, or a seed numpy cannot take."""
    dumped = spec.model_dump(mode="python")
    for seed_path in (("study", "seed"), ("data", "split_seed"), ("masks", "seed"), ("noise", "seed")):
        if not 0 <= _dig(dumped, seed_path) < 2**32:
            return f"seed {seed_path} = {_dig(dumped, seed_path)}"
    seeds = dumped["training"]["seed"]
    if any(not 0 <= s < 2**32 for s in (seeds if isinstance(seeds, list) else [seeds])):
        return f"training.seed = {seeds}"
    if spec.data.root == "":
        return "data.root is empty"
    if value is None or isinstance(value, dict):
        return None  # null where null is allowed; {} is a section with every default
    try:
        stored = _dig(dumped, path)
    except (KeyError, IndexError, TypeError):
        return None  # the field is not a plain value (for example an element of a sorted list)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} took {value}"
    if isinstance(value, bool) != isinstance(stored, bool) or isinstance(stored, bool) and stored != value:
        return f"{path}: {value!r} became {stored!r}"
    if path[:2] == ("noise", "variances"):
        return None  # sorted and deduplicated on purpose
    if value != stored and not (isinstance(value, (int, float)) and isinstance(stored, (int, float)) and value == stored):
        return f"{path}: {value!r} became {stored!r}"
    return None


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_mutated_specs_are_rejected_cleanly_or_really_valid(spec_path, tmp_path):
    import re

    raw = yaml.safe_load(spec_path.read_text())
    rng = random.Random(f"fuzz:{spec_path.name}")
    tracebacks, accepted_invalid, rejected, accepted = [], [], 0, 0
    for index in range(PER_SPEC):
        mutated, kind, path, value = _mutate(raw, rng)
        file = tmp_path / f"m{index}.yaml"
        file.write_text(yaml.safe_dump(mutated, sort_keys=False))
        try:
            spec = load_spec(file)
        except SpecError as err:
            rejected += 1
            lines = str(err).splitlines()
            assert lines[0].startswith(f"{file}: "), lines[0]
            for line in lines[1:]:
                assert re.match(LINE, line), f"{kind} {path} = {value!r:.60}: {line!r}"
                assert len(line) < 400, line  # a 5,000-character value is shortened
            continue
        except Exception as err:  # noqa: BLE001 - what the test looks for
            tracebacks.append(f"{kind} {path} = {value!r:.60}: {type(err).__name__}: {err}")
            continue
        accepted += 1
        why = _accepted_invalid(spec, path, value)
        if why:
            accepted_invalid.append(f"{kind} {path}: {why}")
    print(f"{spec_path.name}: {PER_SPEC} mutations, {rejected} rejected, {accepted} accepted, "
          f"{len(tracebacks)} tracebacks, {len(accepted_invalid)} accepted-invalid")
    assert not tracebacks, tracebacks
    assert not accepted_invalid, accepted_invalid
    assert rejected > PER_SPEC // 2  # the mutations are mostly invalid: the fuzzer does reach the validator


@pytest.mark.parametrize("override, field, shown", [
    ("data.dataset=[a, b]", "data.dataset", "unknown dataset ['a', 'b']"),
    ("data.dataset={x: 1}", "data.dataset", "unknown dataset {'x': 1}"),
    ("noise.variances=[.inf]", "noise.variances.0", "finite number"),
    ("noise.variances=[1e30]", "noise.variances.0", "less than or equal to 100"),
    ("training.seed=1e30", "training.seed", "valid integer"),
    ("training.epochs=1e30", "training.epochs", "valid integer"),
    ("study.seed=-1", "study.seed", "greater than or equal to 0"),
    ("data.split_seed=-1", "data.split_seed", "greater than or equal to 0"),
    ("noise.seed=1e23", "noise.seed", "valid integer"),
    ("training.batch_size=true", "training.batch_size", "got True"),
    ("masks.remaining=[1.0, true]", "masks.remaining.1", "got True"),
    ("data.root=", "data.root", "at least 1 character"),
    ("masks.method=[foo]", "masks.method.0", "got 'foo'"),
])
def test_the_issues_reproductions_are_rejected_with_the_field(override, field, shown):
    with pytest.raises(SpecError) as rejected:
        load_spec("sweeps/quickstart.yaml", [override])
    problems = str(rejected.value).splitlines()[1:]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"  - {field} (from --set): ") and shown in problems[0], problems[0]
    for leak in ("literal[", ".int", "list[", "instance of", "function-"):
        assert leak not in problems[0]


def test_numbers_are_read_as_yaml_1_2_writes_them(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: n\ntraining:\n  lr: 1e-3\n  clip_grad_norm: 5E+1\n")
    spec = load_spec(path)
    assert spec.training.lr == 0.001 and spec.training.clip_grad_norm == 50.0


def test_messages_keep_brackets_and_a_path_with_markup_is_printed_as_it_is(tmp_path):
    folder = tmp_path / "a[" / "x]b"  # the path holds "[/x]", which rich would read as a closing tag
    folder.mkdir(parents=True)
    path = folder / "spec.yaml"
    path.write_text("name: n\nnoise:\n  variances: [.nan]\n")
    result = CliRunner().invoke(main, ["validate", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "a[/x]b/spec.yaml" in result.output and "got nan" in result.output, result.output
    long = CliRunner().invoke(main, ["validate", "sweeps/quickstart.yaml", "--set", "name=" + "y" * 5000],
                              env={"COLUMNS": "300"})
    assert long.exit_code == 2 and long.output.count("y" * 50) == 1 and "5000 characters" in long.output or \
        "5002 characters" in long.output
