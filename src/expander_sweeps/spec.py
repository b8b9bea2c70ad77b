"""The sweep spec: Pydantic models of the YAML file, loading with precise errors, JSON Schema.

Every field is documented where it is declared, so `expander-sweeps schema` (editor
completion) and the error messages come from the same text.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "SpecError",
    "SweepSpec",
    "load_spec",
    "spec_from_dict",
    "json_schema",
    "MnistDataSpec",
    "AudioDataSpec",
    "CustomDataSpec",
    "redact_url",
    "sqlite_file",
]


class SpecError(ValueError):
    """An invalid spec. The message names every bad field, its YAML line and what is allowed."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `hiden: 64` must not be silently ignored. Strict
    # types: `batch_size: true` is not 1 and `epochs: 1e30` is not an integer (an int is still
    # a float). Non-finite numbers are refused everywhere: no field means anything at inf or nan.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


# Seeds go to numpy, which takes 0 .. 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class RangeSpec(_Strict):
    """A continuous range of remaining fractions for non-grid samplers."""

    low: float = Field(gt=0.0, le=1.0, description="Smallest remaining fraction (0 < low <= 1).")
    high: float = Field(gt=0.0, le=1.0, description="Largest remaining fraction (<= 1; 1 = dense).")
    log: bool = Field(True, description="Sample on a log scale (dense detail near small fractions).")

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if self.low > self.high:
            raise ValueError(f"low must be <= high, but got low={self.low}, high={self.high}")
        return self


class StudySpec(_Strict):
    sampler: Literal["grid", "tpe", "random", "nsga2", "qmc"] = Field(
        "grid",
        description="Optuna sampler. `grid` runs every point of the search space once "
        "(the paper's protocol); the others draw `n_trials` points.",
    )
    storage: str | None = Field(
        None,
        min_length=1,
        description="Optuna storage: a SQLAlchemy URL, journal:///path/study.log (Optuna's journal "
        "file: no server, a shared filesystem for several machines) or redis://host:6379/0 (the "
        "journal in Redis). Default: $EXPANDER_SWEEPS_STORAGE, else sqlite:///<run_dir>/optuna.db. "
        "Use postgresql+psycopg://user@host/db or a journal to share one study between workers on "
        "several machines.",
    )
    seed: Seed = Field(0, description="Seed of the sampler.")
    n_trials: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Trials to run in total (finished ones count). Default for `grid`: the "
        "whole grid; required for the other samplers.",
    )
    heartbeat_seconds: int = Field(
        30, ge=1, le=3600, description="A running trial records a heartbeat this often (seconds)."
    )
    grace_seconds: int = Field(
        120,
        ge=2,
        le=7 * 24 * 3600,
        description="A RUNNING trial without a heartbeat for this long belongs to a dead worker: "
        "it is failed and retried (see `retries`).",
    )
    retries: int = Field(
        2, ge=0, le=100, description="How many times a trial whose worker died is retried by another worker."
    )
    objectives: list[Literal["accuracy", "remaining_edges"]] = Field(
        default_factory=lambda: ["accuracy"],
        min_length=1,
        description="What the study optimises: `accuracy` (clean test accuracy, maximised) "
        "and optionally `remaining_edges` (mean remaining fraction of the pruned layers, "
        "minimised) for a multi-objective study.",
    )

    @field_validator("storage")
    @classmethod
    def _storage_shape(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("journal:") and not value.removeprefix("journal://").strip("/ ").strip():
            raise ValueError(f"{value!r} names no file: write journal:///shared/folder/study.log "
                             "(three slashes before an absolute path)")
        if value.startswith("journal:") and not value.startswith("journal://"):
            raise ValueError(f"{value!r} is not a journal URL: write journal:///absolute/path/study.log "
                             "or journal://relative/path/study.log")
        if "://" not in value:
            raise ValueError(f"{value!r} is not a storage URL: a SQLAlchemy URL (sqlite:///path/optuna.db, "
                             "postgresql+psycopg://user@host/db), journal:///path/study.log or redis://host:6379/0")
        return value

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"objectives must be distinct, but got {value}")
        return value

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> StudySpec:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError(
                f"grace_seconds must exceed heartbeat_seconds, but got grace_seconds={self.grace_seconds}, "
                f"heartbeat_seconds={self.heartbeat_seconds}"
            )
        return self


class _SplitFields(_Strict):
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Held-out share for a `pooled` split.")
    split_seed: Seed = Field(0, description="Seed of the stratified split and of the `limit_*` subsets.")
    limit_train: int | None = Field(
        None, ge=10, description="Use only this many training examples (stratified); for quick runs."
    )
    limit_test: int | None = Field(
        None, ge=10, description="Use only this many test examples (stratified); for quick runs."
    )


class MnistDataSpec(_SplitFields):
    dataset: Literal["mnist"] = Field("mnist", description="`mnist`: sequential MNIST.")
    root: str = Field(
        "~/.cache/expander-sweeps/mnist",
        min_length=1,
        description="Folder with the IDX files (plain or .gz; also torchvision's MNIST/raw "
        "layout). A folder with only the 10k test pair works too (see `split`).",
    )
    download: bool = Field(
        True,
        description="Download the dataset with torchvision when `root` lacks it (needs a network).",
    )
    sequence: Literal["rows", "pixels"] = Field(
        "rows",
        description="`rows`: each image is k = rows steps of a row of pixels (28 x 28 for MNIST; "
        "any IDX image size works). `pixels`: k = rows x columns steps of one pixel (784 for MNIST: "
        "the harder classic variant).",
    )
    split: Literal["pooled", "official"] = Field(
        "pooled",
        description="`pooled`: pool every image found and make a seeded stratified split with "
        "`test_fraction` held out (the paper evaluates on a 20% test split). `official`: "
        "MNIST's own 60k/10k split (needs both file pairs).",
    )

    @property
    def input_kind(self) -> str:
        return self.sequence

    @property
    def summary(self) -> str:
        # k is the image's rows (or rows x columns): known once the files are read.
        return f"mnist ({self.sequence}: k = {'rows' if self.sequence == 'rows' else 'rows x columns'}), split {self.split}"


class AudioDataSpec(_SplitFields):
    dataset: Literal["speech_commands", "fsdd"] = Field(
        description="`speech_commands`: Google Speech Commands v0.02 (35 words; torchaudio "
        "downloads it). `fsdd`: a Free Spoken Digit Dataset folder (`{digit}_{speaker}_{index}.wav`)."
    )
    root: str = Field(
        min_length=1,
        description="Speech Commands: the folder holding SpeechCommands/speech_commands_v0.02 (or "
        "that folder itself). FSDD: the folder holding the WAV files (or its `recordings/`)."
    )
    download: bool = Field(True, description="Speech Commands only: download when `root` lacks it.")
    features: Literal["mfcc", "logmel", "waveform"] = Field(
        "mfcc",
        description="Per-step features. `waveform`: the raw clip cut into k frames of "
        "sample_rate * clip_seconds / k samples. `mfcc` / `logmel`: torchaudio transforms with "
        "the hop chosen to give k frames.",
    )
    seq_len: int = Field(400, ge=1, le=16000, description="k: steps per clip (the paper: 400).")
    n_features: int = Field(
        40, ge=1, le=256, description="MFCC coefficients or mel bands per step (ignored for `waveform`)."
    )
    sample_rate: int = Field(16000, ge=1000, description="Clips are resampled to this rate (Hz).")
    clip_seconds: float = Field(1.0, gt=0.0, le=10.0, description="Window length; clips are padded or cropped to it.")
    align: Literal["end", "start", "center"] = Field(
        "end",
        description="Where a clip shorter than the window sits. `end` (zeros before the word) "
        "suits a classifier that reads the last hidden state: a word followed by hundreds of "
        "padding frames is forgotten by an LSTM. Longer clips are cropped on the same side.",
    )
    split: Literal["official", "pooled"] = Field(
        "official",
        description="`official`: Speech Commands' testing_list.txt (validation_list.txt clips "
        "are left out of training); FSDD's indices 0-4 of every digit and speaker as test. "
        "`pooled`: a seeded stratified split with `test_fraction` held out.",
    )
    words: list[str] | None = Field(
        None, description="Speech Commands only: keep these words (default: all 35)."
    )

    @property
    def input_kind(self) -> str:
        return self.features

    @property
    def summary(self) -> str:
        size = "" if self.features == "waveform" else f" x {self.n_features}"
        return (f"{self.dataset} ({self.features}, k={self.seq_len}{size}, {self.sample_rate} Hz, "
                f"aligned {self.align}), split {self.split}")


_IMPORT_PATH = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"


class CustomDataSpec(_SplitFields):
    dataset: Literal["custom"] = Field(description="`custom`: your own data, from `loader`.")
    loader: str = Field(
        pattern=_IMPORT_PATH,
        description="Your data: `package.module:function`, called as function(**args). It returns "
        "(x, y) for the tool to split (stratified, `test_fraction`, `split_seed`), or "
        "{'train': (x, y), 'test': (x, y)}: x of shape (N, k, features) (floats), y of N integer "
        "labels 0..C-1 (numpy arrays or tensors). The module is imported from the spec's folder "
        "or the Python path.",
    )
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for `loader`.")

    @property
    def input_kind(self) -> str:
        return "custom"

    @property
    def summary(self) -> str:
        return f"custom ({self.loader})"


DATASETS = ("mnist", "speech_commands", "fsdd", "custom")


def _data_kind(value: Any) -> str | None:
    """Which model validates the data section; `dataset` may be left out and means mnist."""
    kind = value.get("dataset", "mnist") if isinstance(value, dict) else getattr(value, "dataset", None)
    if not isinstance(kind, str):
        return None  # a list or a mapping: reported as an unknown dataset, not a TypeError
    return {"mnist": "mnist", "speech_commands": "audio", "fsdd": "audio", "custom": "custom"}.get(kind, kind)


DataSpec = Annotated[
    Annotated[MnistDataSpec, Tag("mnist")] | Annotated[AudioDataSpec, Tag("audio")]
    | Annotated[CustomDataSpec, Tag("custom")],
    Discriminator(_data_kind),
]


class ModelSpec(_Strict):
    cell: Literal["rnn", "lstm", "gru"] = Field("rnn", description="Recurrent cell.")
    hidden: int = Field(128, ge=1, le=65536, description="Hidden size H of the recurrent layer.")
    layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers (the paper: 1).")
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="RNN nonlinearity.")
    init: Literal["kaiming_uniform", "pytorch_default", "orthogonal", "identity"] = Field(
        "kaiming_uniform",
        description="Weight init. `kaiming_uniform`: U(+-sqrt(6/fan_in)), biases 0 (the paper). "
        "`pytorch_default`: U(+-1/sqrt(H)). `orthogonal`: every W_hh gate block a random "
        "orthogonal matrix (spectral radius 1), other weights Kaiming uniform, biases 0. "
        "`identity`: IRNN (Le et al. 2015): W_hh = I, other weights N(0, 0.001^2), biases 0; "
        "for `cell: rnn` with `nonlinearity: relu`. The last two keep a long sequence's "
        "gradients from exploding at the start. It moves where the bounds cross: printed with "
        "every result.",
    )
    factory: str | None = Field(
        None,
        pattern=_IMPORT_PATH,
        description="Your own model: `package.module:function`, called as function(input_size, "
        "num_classes, **args) under the trial's seed. It returns a torch.nn.Module mapping (N, k, "
        "features) to (N, num_classes) logits and holding one nn.RNN, nn.LSTM or nn.GRU (the first "
        "one is pruned: W_xh = weight_ih_l0, W_hh = weight_hh_l0; batch_first=True). `cell`, "
        "`hidden` and `layers` must describe that layer (they are checked); `init` and "
        "`nonlinearity` are the factory's business and ignored.",
    )
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for `factory`.")

    @property
    def init_label(self) -> str:
        """The init as reports print it: a factory's model is initialised by the factory."""
        return f"by {self.factory}" if self.factory else self.init

    @model_validator(mode="after")
    def _args_need_a_factory(self) -> ModelSpec:
        if self.args and self.factory is None:
            raise ValueError("model.args are the arguments of model.factory, which is not set; "
                             "set model.factory: package.module:function, or remove model.args")
        return self

    @model_validator(mode="after")
    def _identity_needs_relu_rnn(self) -> ModelSpec:
        if self.init == "identity" and self.factory is None and (self.cell != "rnn" or self.nonlinearity != "relu"):
            raise ValueError(
                "init 'identity' (IRNN) is defined for a ReLU RNN, but got cell "
                f"'{self.cell}' with nonlinearity '{self.nonlinearity}'; set cell: rnn and "
                "nonlinearity: relu, or use init: orthogonal"
            )
        return self


class TrainingSpec(_Strict):
    lr: float = Field(0.001, gt=0.0, le=10.0, description="Adam learning rate.")
    batch_size: int = Field(128, ge=1, le=1_000_000, description="Mini-batch size.")
    epochs: int = Field(20, ge=0, le=100_000, description="Epochs of dense training before the one-shot mask.")
    finetune_epochs: int = Field(
        20, ge=0, le=100_000, description="Epochs of training after masking, with the mask held ('pruning epochs')."
    )
    seed: Seed | list[Seed] = Field(
        0,
        description="Seed of initialisation, batch order and training noise. A list runs every "
        "point once per seed (a study dimension), and the report shows mean and spread.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto`: CUDA when available, else CPU."
    )
    eval_batch_size: int = Field(2048, ge=1, le=1_000_000, description="Batch size of evaluation passes.")
    engine: Literal["auto", "per_trial", "batched"] = Field(
        "auto",
        description="How fine-tuning trials run. `batched`: the trials of one dense model (grid "
        "points that differ only in their masks) are fine-tuned together as one stacked model, "
        "the same numbers up to float rounding. `per_trial`: one model at a time. `auto`: batched "
        "on CUDA, and on a CPU for RNN and GRU cells (an LSTM runs per_trial there). A model from "
        "model.factory, and a sampled study, run per_trial.",
    )
    group_size: int = Field(
        32, ge=1, le=4096,
        description="The batched engine's most trials in one group (fewer when device memory or "
        "a fair share among workers says so).",
    )
    clip_grad_norm: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description="Clip the gradient's global L2 norm to this value before every Adam step, "
        "in dense training and fine-tuning alike (null: no clipping, the paper's protocol). "
        "Long sequences (pixel MNIST, k = 784) usually need it, for example 1.0. Printed with "
        "every result.",
    )

    @field_validator("seed")
    @classmethod
    def _distinct_seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"seed lists must be non-empty and distinct, but got {value}")
        return value

    @property
    def seeds(self) -> list[int]:
        return self.seed if isinstance(self.seed, list) else [self.seed]

    @property
    def clipping(self) -> str:
        """How gradients are clipped, in words (printed with every result, like the init)."""
        return "no gradient clipping" if self.clip_grad_norm is None else f"gradient norm clipped to {self.clip_grad_norm:g}"


# The registries are imported when a name is checked, not with this module: the logged model's
# code (tracking/model_code.py) carries spec.py and what it imports at module level, and stays small.
def _short_name(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:57] + "...")


def _registered_method(name: str) -> str:
    from .pruning.mask_methods import mask_method_names

    if name not in mask_method_names():
        raise ValueError(f"got {_short_name(name)}, which is not a registered mask method; known: "
                         f"{', '.join(mask_method_names())} (a plug-in's methods need its module under `plugins:`)")
    return name


def _registered_bound(name: str) -> str:
    from .graphs.graph_measures import bound_names

    if name not in bound_names():
        raise ValueError(f"got {_short_name(name)}, which is not a registered bound; known: "
                         f"{', '.join(bound_names())} (a plug-in's bounds need its module under `plugins:`)")
    return name


def _registered_measure(name: str) -> str:
    from .graphs.graph_measures import opt_in_names

    if name not in opt_in_names():
        raise ValueError(f"got {_short_name(name)}, which is not an opt-in graph measure; known: "
                         f"{', '.join(opt_in_names())} (a plug-in's need its module under `plugins:`)")
    return name


def _all_bounds() -> list[str]:
    from .graphs.graph_measures import bound_names

    return list(bound_names())


MaskMethodName = Annotated[str, AfterValidator(_registered_method)]
BoundName = Annotated[str, AfterValidator(_registered_bound)]
MeasureName = Annotated[str, AfterValidator(_registered_measure)]


def _matrix_name(name: str) -> str:
    if not re.fullmatch(r"W_(xh|hh)(_l[1-7])?", name):
        raise ValueError(f"got {_short_name(name)}; a recurrent matrix is W_xh or W_hh (the first layer) or "
                         "W_xh_l1, W_hh_l1, ... (deeper layers, up to W_hh_l7)")
    return name


def matrix_depth(name: str) -> int:
    """The recurrent layer a matrix belongs to: W_hh -> 0, W_hh_l2 -> 2."""
    return int(name.rsplit("_l", 1)[1]) if "_l" in name else 0


MatrixName = Annotated[str, AfterValidator(_matrix_name)]


class MaskSpec(_Strict):
    method: MaskMethodName | list[MaskMethodName] = Field(
        "magnitude",
        description="A registered mask method (mask_methods.py; plug-ins add more): `magnitude`: keep "
        "the largest |w| of each layer (one-shot, layer-wise). `random`: a uniformly random mask at the "
        "same density (a control). `regular`: a random biregular mask (every output keeps "
        "round(remaining * inputs) inputs; input degrees differ by at most one), an "
        "expander-preserving control. `magnitude_min_degree`: magnitude, but every row and column keeps "
        "at least `min_degree` edges. Pruning at initialisation (the trial trains `training.epochs` "
        "from the masked initial weights; no dense model): `snip`, `grasp`, `synflow`. `lottery`: "
        "iterative magnitude pruning with rewinding to epoch `rewind_epoch`. A list puts the method in "
        "the search space, so the report compares methods at equal remaining edges.",
        json_schema_extra={"examples": ["magnitude", ["magnitude", "random", "regular"]]},
    )
    min_degree: int = Field(
        1, ge=0, le=65536, description="`magnitude_min_degree`: edges every row and every column keeps at least."
    )
    score_batch: int = Field(
        256, ge=1, le=1_000_000, description="`snip`, `grasp`: training examples (the first of a seeded "
        "shuffle) whose loss scores the weights at initialisation.")
    synflow_rounds: int = Field(100, ge=1, le=10_000, description="`synflow`: pruning rounds (the paper: 100).")
    lottery_share: float = Field(
        0.2, gt=0.0, lt=1.0, description="`lottery`: share of the remaining weights of each layer pruned per "
        "round (levels keep 0.8, 0.64, 0.512, ... of the entries with 0.2).")
    rewind_epoch: int = Field(
        1, ge=0, le=100_000, description="`lottery`: epoch of dense training the weights are rewound to "
        "before each retraining (0: the initial weights, as in the first lottery-ticket paper).")
    layers: list[MatrixName] = Field(
        default_factory=lambda: ["W_xh", "W_hh"],
        min_length=1,
        description="Matrices to prune: W_xh and W_hh of the first recurrent layer, W_xh_l1 and W_hh_l1 "
        "of the second (its input is the first layer's hidden state), and so on up to model.layers. "
        "W_hy (output) always stays dense.",
        json_schema_extra={"examples": [["W_xh", "W_hh"], ["W_hh", "W_hh_l1"]]},
    )
    schedule: Literal["each", "tied", "independent"] = Field(
        "each",
        description="`each`: one layer pruned per trial, the others dense (one paper panel per "
        "layer). `tied`: all `layers` pruned to the same fraction. `independent`: each layer "
        "its own fraction (the grid is their product).",
    )
    remaining: list[float] | RangeSpec = Field(
        default_factory=lambda: [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01],
        description="Remaining-edge fractions to try (1 = dense): a list (grid or categorical), "
        "or {low, high, log} for non-grid samplers.",
    )
    seed: Seed = Field(0, description="Seed of random masks.")

    @field_validator("method")
    @classmethod
    def _distinct_methods(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"method lists must be non-empty and distinct, but got {value}")
        return value

    @property
    def methods(self) -> list[str]:
        return self.method if isinstance(self.method, list) else [self.method]

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"layers must be distinct, but got {value}")
        return value

    @field_validator("remaining")
    @classmethod
    def _fractions(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("remaining must list at least one fraction")
            bad = [v for v in value if not (0.0 < v <= 1.0) or math.isnan(v)]
            if bad:
                raise ValueError(
                    f"remaining fractions must lie in (0, 1] (1 = dense), but got {bad}; "
                    "write 5% as 0.05"
                )
            if len(set(value)) != len(value):
                raise ValueError(f"remaining fractions must be distinct, but got {value}")
        return value


class NoiseSpec(_Strict):
    fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="p: share of input values (pixels) that receive noise."
    )
    variances: list[Annotated[float, Field(ge=0.0, le=100.0)]] = Field(
        default_factory=lambda: [0.15, 0.30, 0.45, 0.60],
        description="sigma as the paper writes it: the VARIANCE of the zero-mean Gaussian noise "
        "(standard deviation = sqrt(variance)), on inputs scaled to [0, 1]. Clean data is "
        "always evaluated too; 0 may be listed and means clean. At most 100 (a standard deviation "
        "of 10 on [0, 1] inputs: pure noise).",
    )
    at_training: bool = Field(
        False,
        description="False: noise only at test time, every trial evaluated at every variance. "
        "True: the training noise variance becomes a study dimension (dense and fine-tuning "
        "see it), and each trial is still tested at every variance.",
    )
    seed: Seed = Field(0, description="Seed of the test-time noise (the same noisy test set in every trial).")

    @field_validator("variances")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if v < 0 or math.isnan(v)]
        if bad:
            raise ValueError(f"variances must be >= 0, but got {bad}")
        return sorted(set(value))

    @property
    def test_variances(self) -> list[float]:
        """Variances evaluated on every trial, clean (0) first."""
        return sorted({0.0, *self.variances})


class SpectralSpec(_Strict):
    graphs: list[Literal["layer", "step", "unrolled"]] = Field(
        default_factory=lambda: ["layer", "step", "unrolled"],
        min_length=1,
        description="Graphs whose spectra are computed. `layer`: each pruned matrix as a "
        "bipartite graph. `step`: one step of the unrolled network, [M_xh | M_hh] feeding h_t. "
        "`unrolled`: the whole network unrolled over k steps (x_1..x_k, h_0..h_k; edges of M_xh "
        "and M_hh at every step; gate blocks merged), solved with a sparse shift-invert eigensolver.",
    )
    unrolled_steps: int | None = Field(
        None, ge=1, le=1_000_000, description="k of the unrolled graph. Default: the data's sequence length."
    )
    weighted: bool = Field(
        True, description="Also compute spectra of the weighted graph |W| on the mask (Figure 4)."
    )
    remove_isolated: bool = Field(
        True,
        description="Drop all-zero rows and columns (isolated vertices) before the spectra, as is "
        "customary; their count is recorded either way.",
    )
    gates: bool = Field(
        True,
        description="For LSTM/GRU, also the graph of each gate block of the stacked matrices "
        "(W_xh.i, W_xh.f, W_xh.g, W_xh.o for an LSTM), besides the stacked 4H x I graph.",
    )
    measures: list[MeasureName] = Field(
        default_factory=list,
        description="Opt-in graph measures, on every layer, gate-block and step graph (binary and weighted): "
        "gap_ratio, nl_gap, cheeger_sweep, cheeger_lower, cheeger_upper (docs/definitions.md), or a "
        "plug-in's opt-in quantity. They add numbers; they change none (not a result setting).",
    )

    @field_validator("measures")
    @classmethod
    def _distinct_measures(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"measures must be distinct, but got {value}")
        return value


class MlflowSpec(_Strict):
    enabled: bool = Field(True, description="Log one MLflow run per trial.")
    uri: str | None = Field(
        None,
        min_length=1,
        description="Tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/mlflow.db "
        "with artifacts in <run_dir>/mlartifacts.",
    )
    experiment: str | None = Field(None, description="Experiment name. Default: the sweep name.")
    log_models: bool = Field(
        True, description="Log each trial's pruned checkpoint and register it as a model version."
    )
    registered_model: str | None = Field(
        None, description="Registry name of the pruned checkpoints. Default: <sweep name>-pruned."
    )


class WandbSpec(_Strict):
    enabled: bool = Field(False, description="Log one Weights & Biases run per trial.")
    project: str | None = Field(None, description="W&B project. Default: the sweep name.")
    entity: str | None = Field(None, description="W&B entity (user or team). Default: yours.")
    mode: Literal["auto", "offline", "online"] = Field(
        "auto",
        description="`auto`: online when WANDB_API_KEY is set (or WANDB_MODE says so), else "
        "offline, with the `wandb sync` command printed at the end.",
    )
    system_metrics: bool = Field(
        False,
        description="Record W&B's system metrics (CPU, memory, GPU) in each trial's run. Off by "
        "default: the sampler costs CPU beside the training, and a trial's run is short.",
    )


class TrackingSpec(_Strict):
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec, description="MLflow tracking.")
    wandb: WandbSpec = Field(default_factory=WandbSpec, description="Weights & Biases tracking.")
    extra: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Trackers from plug-ins (tracking/backends.py), by name, each with its own settings: "
        "naming one enables it. Its module goes under `plugins:`.",
    )
    lend_thread: bool = Field(
        False,
        description="On a CPU, train with one torch thread fewer while the tracker process has work "
        "(less tracking overhead when training fills every core). Off by default: float sums differ "
        "with the thread count, so a trial's numbers then depend on when the trackers worked, and "
        "identical launches can differ slightly.",
    )
    max_lag_seconds: float = Field(
        60.0,
        gt=0,
        description="The trackers run on idle CPU time only; when the oldest call waiting for them "
        "is older than this (training left them no idle time), training pauses until they are "
        "back within half of it. A pause changes no number.",
    )


class ReportSpec(_Strict):
    bounds: list[BoundName] = Field(
        default_factory=_all_bounds,
        min_length=1,
        description="Bounds whose zero crossing is reported: registered bounds (graph_measures.py), "
        "by default all of them (delta_r, delta_s, biregular, and any a plug-in adds).",
    )
    figure_bounds: list[BoundName] = Field(
        default_factory=lambda: ["delta_r", "delta_s"],
        description="Bounds drawn on the right axis of each layer's figure.",
    )

    figure_weighting: Literal["binary", "weighted"] = Field(
        "binary", description="Which graph of each layer the figures draw: the 0/1 mask or |W| on it."
    )
    drop_threshold: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="Accuracy drop (as a fraction: 0.01 = 1 point) relative to dense that counts "
        "as 'accuracy dropped'; the report sets where it first happens against the bound crossing.",
    )


class SweepSpec(_Strict):
    """One sweep: what to train, how to mask it, what to measure, where to record it."""

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the sweep: the Optuna study, the MLflow experiment, the run folder.",
    )
    run_dir: str | None = Field(
        None, min_length=1, description="Folder for the study, caches, masks, checkpoints, report. Default: runs/<name>."
    )
    cache_dir: str | None = Field(
        None,
        min_length=1,
        description="Folder of the dense-model cache. Default: <run_dir>/cache. Point several "
        "sweeps at one folder to share dense models.",
    )
    # Before every section that names a registered thing: Pydantic validates fields in order,
    # so the plug-ins' methods and quantities are registered when masks and report are checked.
    plugins: list[str] = Field(
        default_factory=list,
        description="Modules to import before the rest of the spec is read (from the spec's folder "
        "first, then the Python path): the mask methods and graph quantities they register become "
        "names the spec may use. See docs/architecture.md.",
    )
    study: StudySpec = Field(default_factory=StudySpec, description="The Optuna study.")
    data: DataSpec = Field(default_factory=MnistDataSpec, description="The dataset: MNIST or audio.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The network.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training and fine-tuning.")
    masks: MaskSpec = Field(default_factory=MaskSpec, description="One-shot masks and the search over them.")
    noise: NoiseSpec = Field(default_factory=NoiseSpec, description="Gaussian input noise.")
    spectral: SpectralSpec = Field(default_factory=SpectralSpec, description="Spectra of pruned layers.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="Experiment trackers.")
    report: ReportSpec = Field(default_factory=ReportSpec, description="The crossing report.")

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, value: list[str]) -> list[str]:
        from .plugin_loader import import_plugins

        return import_plugins(value)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.study.sampler == "grid" and isinstance(self.masks.remaining, RangeSpec):
            raise ValueError(
                "masks.remaining is a range {low, high}, but study.sampler 'grid' needs a list "
                "of fractions; list them or choose another sampler"
            )
        if self.study.sampler != "grid" and self.study.n_trials is None:
            raise ValueError(
                f"study.n_trials is required with sampler '{self.study.sampler}' "
                "(only 'grid' knows its own size)"
            )
        if self.noise.at_training and not self.noise.variances:
            raise ValueError("noise.at_training needs at least one value in noise.variances")
        deep = [n for n in self.masks.layers if matrix_depth(n) >= self.model.layers]
        if deep:
            raise ValueError(f"masks.layers names {deep}, but model.layers is {self.model.layers} (layers 0 to "
                             f"{self.model.layers - 1}: W_xh_l{{i}}, W_hh_l{{i}} for i >= 1); raise model.layers "
                             "or prune the layers the model has")
        if "synflow" in self.masks.methods and any(matrix_depth(n) for n in self.masks.layers):
            raise ValueError("masks.method synflow scores the first recurrent layer's graph (W_xh, W_hh) only; "
                             "prune deeper layers with another method")
        if "lottery" in self.masks.methods and self.masks.rewind_epoch > self.training.epochs:
            raise ValueError(
                f"masks.rewind_epoch ({self.masks.rewind_epoch}) is past training.epochs "
                f"({self.training.epochs}): a lottery ticket rewinds to a point within training; "
                "lower rewind_epoch or raise epochs"
            )
        return self

    def for_trial(self, seed: int, method: str) -> SweepSpec:
        """This spec with one seed and one mask method: what a single trial runs."""
        return self.model_copy(update={
            "training": self.training.model_copy(update={"seed": seed}),
            "masks": self.masks.model_copy(update={"method": method}),
        })

    # The folder of the spec file (set by load_spec): where model.factory / data.loader modules
    # may sit. None for a spec built in code.
    _spec_dir: Path | None = PrivateAttr(default=None)

    @property
    def spec_dir(self) -> Path | None:
        return self._spec_dir

    # Derived paths: one place decides the layout of a run folder.
    @property
    def run_path(self) -> Path:
        return Path(self.run_dir if self.run_dir else Path("runs") / self.name).expanduser()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else self.run_path / "cache"

    @property
    def storage_url(self) -> str:
        """study.storage, else $EXPANDER_SWEEPS_STORAGE (how docker/ hands workers the shared
        study without writing a password into a spec), else SQLite in the run folder."""
        return (self.study.storage or os.environ.get("EXPANDER_SWEEPS_STORAGE")
                or f"sqlite:///{(self.run_path / 'optuna.db').resolve()}")


# ----------------------------------------------------------------------------- loading
class _SpecLoader(yaml.SafeLoader):
    """YAML as people write numbers: PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string;
    YAML 1.2 and every other parser read it as a float, and so does a spec."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _no_duplicate_keys(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose every key is written once: YAML's "last one wins" would silently drop a value."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: the constructor reports it
            break
        if first != key_node.start_mark.line + 1:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is written twice (first at line {first}); keep one", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _no_octal(loader: _SpecLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.1 reads `0100` as octal (64): refused, since a spec author means 100."""
    text = str(node.value).replace("_", "")
    if re.fullmatch(r"[-+]?0[0-9]+", text):
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value} has a leading zero, which YAML 1.1 reads as an octal number "
            f"({int(text, 8) if re.fullmatch(r'[-+]?0[0-7]+', text) else 'or an error'}); write it without the "
            "leading zero (or 0o... for a real octal number)", node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_SpecLoader.add_constructor("tag:yaml.org,2002:map", lambda loader, node: _no_duplicate_keys(loader, node))
_SpecLoader.add_constructor("tag:yaml.org,2002:int", _no_octal)

# A spec is small: what its YAML aliases expand to is bounded (an "alias bomb" of nested
# references expands to billions of values that validation would walk), and so is its depth.
MAX_SPEC_VALUES = 100_000
MAX_SPEC_DEPTH = 64


def _check_size(root: yaml.Node | None) -> None:
    """Raise SpecError when the node graph, expanded (every alias counted again), holds more than
    MAX_SPEC_VALUES values or nests deeper than MAX_SPEC_DEPTH; iterative, so depth is no problem here."""
    if root is None:
        return
    count, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_SPEC_VALUES:
            raise SpecError(f"the spec expands to more than {MAX_SPEC_VALUES:,} values (YAML aliases repeated "
                            "inside each other?); write the values out")
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"the spec nests deeper than {MAX_SPEC_DEPTH} levels (line {node.start_mark.line + 1}); "
                            "no field of a spec needs that")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass



def _apply_override(raw: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` to the raw mapping; the value is parsed as YAML (0.1, [1, 2], true)."""
    if "=" not in assignment:
        raise SpecError(f"--set expects KEY=VALUE (for example data.root=/data), but got {assignment!r}")
    key, _, text = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set has an empty key in {assignment!r}")
    try:
        value = _yaml_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError) as err:  # ValueError: an integer of thousands of digits
        raise SpecError(f"--set {key}: the value {_short_repr(text)} is not valid YAML ({err})") from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise SpecError(f"--set {key}: '{where}' is a value ({child!r}), not a section")
        node = child
    node[parts[-1]] = value


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based YAML line of the deepest node along a Pydantic error location."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The spec models an annotation can hold (through unions, lists and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _field_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A Pydantic error location as the user's keys: Pydantic adds the names of union members
    (`int`, `list[int]`, `literal['a','b']`, `RangeSpec`, the data section's tag) and of
    validators; only field names and list indices are kept."""
    models: list[type[BaseModel]] = [SweepSpec]
    kept: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            kept.append(part)
        elif any(part in m.model_fields for m in models):
            kept.append(part)
            models = [n for m in models if part in m.model_fields for n in _models_in(m.model_fields[part].annotation)]
    return tuple(kept)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text)} characters)"


def _format_errors(err: ValidationError, source: str, root: yaml.Node | None, overridden: set[str]) -> str:
    problems: dict[tuple[Any, ...], list[str]] = {}  # one line per field, its messages joined
    places: dict[tuple[Any, ...], str] = {}
    inputs: dict[tuple[Any, ...], str] = {}
    for error in err.errors():
        unknown = error["type"] == "extra_forbidden"  # the last part is the user's (unknown) key
        loc = _field_loc(error["loc"][:-1]) + error["loc"][-1:] if unknown else _field_loc(error["loc"])
        message = error["msg"].removeprefix("Value error, ").replace(" or instance of RangeSpec", "")
        if error["type"] == "missing":
            message = "this field is required; add it"
        if error["type"] in ("union_tag_invalid", "union_tag_not_found") and loc == ("data",):
            loc = ("data", "dataset")
            got = error["input"].get("dataset") if isinstance(error.get("input"), dict) else None
            message = f"unknown dataset {_short_repr(got)}; allowed: {', '.join(DATASETS)}"
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `expander-sweeps schema` lists every key)"
        dotted = ".".join(str(p) for p in loc if isinstance(p, str))
        if any(dotted == o or dotted.startswith(o + ".") for o in overridden):
            where = "from --set"
        elif error["type"] == "missing":
            parent = _line_of(root, loc[:-1]) if len(loc) > 1 else None
            where = f"missing from the section at line {parent}" if parent else "missing at the top level"
        else:
            line = _line_of(root, loc)
            where = f"line {line}" if line else "not in the file (default)"
        got = error.get("input")
        # Our own validators already say "but got ..."; Pydantic's built-in messages do not.
        if not (error["type"] in ("missing", "value_error") or isinstance(got, dict) or "dataset" in message):
            inputs.setdefault(loc, f"; got {_short_repr(got)}")
        messages = problems.setdefault(loc, [])
        if message not in messages:
            messages.append(message if not messages else message.removeprefix("Input should be "))
        places.setdefault(loc, where)
    # A union reports every member: for `method: [foo]` both "not one of the names" (the
    # single-name member) and "[0] is not one of the names" (the list member). The deeper
    # location says what is wrong; the shallower one is dropped.
    for loc in [loc for loc in problems if any(len(o) > len(loc) and o[:len(loc)] == loc for o in problems)]:
        del problems[loc]
    lines = [f"{source}: the spec is invalid ({len(problems)} problem(s)):"]
    for loc, messages in problems.items():
        path = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"  - {path} ({places[loc]}): {', or '.join(messages)}{inputs.get(loc, '')}")
    return "\n".join(lines)


def spec_from_dict(raw: dict, source: str = "<spec>", root_node: yaml.Node | None = None,
                   overridden: set[str] | None = None) -> SweepSpec:
    """Validate a plain mapping; raise SpecError with one line per problem."""
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source, root_node, overridden or set())) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read a YAML spec safely, apply `a.b=value` overrides, validate. Raises SpecError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: the spec is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                        f"{err.start}); save it as UTF-8") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror})") from None
    if path.stat().st_size > 10_000_000 or not path.is_file():
        raise SpecError(f"{path}: not a spec file (a regular YAML file of at most 10 MB)")
    try:
        root_node = yaml.compose(text, Loader=_SpecLoader)
        try:
            _check_size(root_node)
        except SpecError as err:
            raise SpecError(f"{path}: {err}") from None
        raw = _yaml_load(text)
    except RecursionError:
        raise SpecError(f"{path}: the spec nests too deeply to read; no field of a spec needs that") from None
    except ValueError as err:  # an integer of thousands of digits
        raise SpecError(f"{path}: a value cannot be read: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a mapping of keys (name:, study:, ...), but got a {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        _apply_override(raw, assignment)
    overridden = {a.partition("=")[0].strip() for a in overrides}
    if raw.get("plugins") and str(path.resolve().parent) not in sys.path:
        sys.path.insert(0, str(path.resolve().parent))  # plug-in modules beside the spec, as for model.factory
    spec = spec_from_dict(raw, str(path), root_node, overridden)
    spec._spec_dir = path.resolve().parent
    check_run_dir(spec.run_path)
    return spec


# What a folder of this tool's making may hold: a run_dir that exists must look like one.
_RUN_DIR_ENTRIES = {"optuna.db", "trials", "cache", "report", "mlflow.db", "mlartifacts", "optuna-artifacts",
                    "wandb", ".trackers-lag"}


def check_run_dir(run_dir: Path) -> None:
    """Raise SpecError when run_dir is not a folder this tool can own: an existing file or device
    (/dev/null), or an existing folder holding only other things (/etc, a home folder)."""
    folder = Path(run_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SpecError(f"run_dir: {folder} exists and is not a folder; choose a new or empty folder")
    if folder.is_dir():
        try:
            entries = {entry.name for entry in folder.iterdir()}
        except OSError as err:
            raise SpecError(f"run_dir: {folder} cannot be read ({err.strerror}); choose a folder you own") from None
        ours = {n for n in entries if any(n == known or n.startswith(known + ".") or n.startswith(known + "-")
                                          for known in _RUN_DIR_ENTRIES)}
        foreign = sorted(entries - ours)
        if foreign and not ours:  # a run folder may hold a user's notes too; a folder of only others' things is not one
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise SpecError(f"run_dir: {folder} already holds other things ({shown}), so it is not a run folder "
                            "of this tool; choose a new or empty folder (the run writes its study, trials and "
                            "report there)")


_SECRET_PARAMS = re.compile(r"(?i)^(password|passwd|pwd|pass|secret|token|access_token|api_key|apikey|key|sslpassword)$")


def redact_url(url: str) -> str:
    """A database or server URL without its secrets, for messages, logs and stored attributes:
    the password of `user:password@host`, and query parameters such as `?password=` or `?token=`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    address, qmark, query = rest.partition("?")
    if "@" in address and not scheme.startswith("sqlite"):  # a password may hold "/", so not only the host part
        credentials, _, host = address.rpartition("@")
        user = credentials.split(":", 1)[0]
        if ":" not in credentials and scheme.lower() in ("http", "https"):
            user = "***"  # https://TOKEN@host: a web server's lone user part is a token, not a name
        address = f"{user}{':***' if ':' in credentials else ''}@{host}"
    if qmark:
        parts = []
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            parts.append(f"{name}=***" if eq and _SECRET_PARAMS.match(name) else item)
        query = "&".join(parts)
    return f"{scheme}://{address}{qmark}{query}"


# `user:secret@` wherever it stands in a text (a URL with a typo such as `postgresql//u:pw@h`, a
# library's exception quoting a URL), and `password=...`-like parameters anywhere.
_USERINFO = re.compile(r"(?P<user>(?:(?<=//)|(?<=^)|(?<=[\s'\"(<=,]))[^\s:/@'\"<>]+):(?P<secret>[^\s@'\"<>/][^\s@'\"<>]*)@")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(?P<name>\b(?:password|passwd|pwd|secret|token|access_token|api_key|apikey|sslpassword))"
    r"(?P<sep>\s*[=:]\s*)(?P<value>[^\s&'\",;)]+)")


_WEB_TOKEN = re.compile(r"(?i)\b(https?://)[^\s:/@'\"<>]+@")


def redact_secrets(text: str) -> str:
    """Any message without the secrets it may carry, whatever the shape of the URL in it: the
    password of every `user:password@`, the token of `https://TOKEN@`, and the value of every
    `password=`/`token=`-like setting."""
    text = _USERINFO.sub(lambda m: f"{m['user']}:***@", str(text))
    text = _WEB_TOKEN.sub(lambda m: f"{m[1]}***@", text)
    return _SECRET_ASSIGNMENT.sub(lambda m: f"{m['name']}{m['sep']}***", text)


def sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL (without its ?options), else None."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def json_schema() -> str:
    """The JSON Schema of a spec file, for editors (yaml-language-server) and docs."""
    schema = SweepSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "expander-sweeps sweep spec"
    return json.dumps(schema, indent=2)
