"""Datasets: the real data a model is calibrated, trained and evaluated on.

Inputs are dicts from the model's input name to an array whose first axis is the
sample axis, so one code path serves single-input CNNs and multi-input transformers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

from harness.artifacts import TensorSpec

Inputs = Mapping[str, np.ndarray]
QAT_OBJECTIVES = ("classify", "distill")  # Dataset.qat_objective
QAT_SPLITS = ("train", "calib")  # Dataset.qat_split: never "eval"


class DataError(ValueError):
    """A dataset is missing or malformed; the message says which file/field."""


@dataclass(frozen=True)
class Dataset:
    """Splits of one task. `calib` is never random data: it is a slice of the real set."""

    name: str  # shown in errors and manifests
    eval_inputs: Inputs  # held-out evaluation split, by input name
    calib_inputs: Inputs  # calibration split for static quantization
    eval_labels: Optional[np.ndarray] = None  # None for label-free metrics (e.g. cosine to fp32)
    train_inputs: Optional[Inputs] = None  # for QAT fine-tuning (optional)
    train_labels: Optional[np.ndarray] = None
    source: str = ""  # where the data comes from, for the report
    # Labels of the calibration split: keep_float="auto" scores a label metric (top-1) there,
    # never on the evaluation split. Not in fingerprint(): only the search reads them, and its
    # own cache key hashes them.
    calib_labels: Optional[np.ndarray] = None
    # What qat-int8 fine-tunes towards: "classify" (cross-entropy on the integer labels of its
    # split) or "distill" (self-distillation: match the fp32 model's own outputs on its split, for
    # a model whose data has no labels, e.g. sentence embeddings scored by cosine to fp32).
    qat_objective: str = "classify"
    # The split qat-int8 fine-tunes on: "train", or "calib" where the calibration split is the only
    # data outside the evaluation set (never scored, so training on it is legitimate). Never "eval".
    qat_split: str = "train"
    # The Adam learning rate of the QAT fine-tune on this data; None: the recipe's own (1e-4 PT2E,
    # 5e-4 litert-torch, set for digits-cnn). A pretrained transformer wants a far smaller one.
    qat_learning_rate: Optional[float] = None

    def __post_init__(self) -> None:
        if self.qat_objective not in QAT_OBJECTIVES:
            raise DataError(f"dataset {self.name!r}: qat_objective {self.qat_objective!r} is not one of {QAT_OBJECTIVES}")
        if self.qat_split not in QAT_SPLITS:
            raise DataError(f"dataset {self.name!r}: qat_split {self.qat_split!r} is not one of {QAT_SPLITS} (QAT never "
                            "trains on the evaluation split: its scores would then measure memory, not quantization)")
        if self.qat_learning_rate is not None and not self.qat_learning_rate > 0:
            raise DataError(f"dataset {self.name!r}: qat_learning_rate {self.qat_learning_rate!r} is not a positive number")
        for split, key in (("eval_inputs", "x_eval"), ("calib_inputs", "x_calib"), ("train_inputs", "x_train")):
            value = getattr(self, split)
            if value is None and split == "train_inputs":
                continue
            if not value:
                raise DataError(f"dataset {self.name!r}: {split} is empty")
            counts = {k: len(np.shape(v)) and len(v) for k, v in value.items()}
            if len(set(counts.values())) != 1:
                raise DataError(f"dataset {self.name!r}: {split} inputs differ in sample count: {counts}")
            if not next(iter(counts.values())):
                use = {"x_calib": "static int8, mixed and int16x8 calibrate on it",
                       "x_eval": "accuracy is scored on it", "x_train": "qat-int8 fine-tunes on it (or leave it out)"}[key]
                raise DataError(f"dataset {self.name!r}: the {split.split('_')[0]} split ({key}) has no samples; {use}")
        if self.train_inputs is not None:
            n_train = len(next(iter(self.train_inputs.values())))
            if self.train_labels is not None and len(self.train_labels) != n_train:
                raise DataError(f"dataset {self.name!r}: {n_train} training samples but {len(self.train_labels)} labels (y_train)")
            if set(self.train_inputs) != set(self.eval_inputs):
                raise DataError(f"dataset {self.name!r}: train inputs {sorted(self.train_inputs)} and eval inputs "
                                f"{sorted(self.eval_inputs)} name different model inputs")
        n_eval = len(next(iter(self.eval_inputs.values())))
        if self.eval_labels is not None and len(self.eval_labels) != n_eval:
            raise DataError(
                f"dataset {self.name!r}: {n_eval} evaluation samples but {len(self.eval_labels)} labels (y_eval)"
            )
        n_calib = len(next(iter(self.calib_inputs.values())))
        if self.calib_labels is not None and len(self.calib_labels) != n_calib:
            raise DataError(
                f"dataset {self.name!r}: {n_calib} calibration samples but {len(self.calib_labels)} calibration labels"
            )
        if set(self.eval_inputs) != set(self.calib_inputs):
            raise DataError(
                f"dataset {self.name!r}: eval inputs {sorted(self.eval_inputs)} and calibration inputs "
                f"{sorted(self.calib_inputs)} name different model inputs"
            )

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.eval_inputs)

    @property
    def n_eval(self) -> int:
        return len(next(iter(self.eval_inputs.values())))

    def renamed(self, names: Mapping[str, str]) -> "Dataset":
        """The same splits with inputs renamed (old name -> new name)."""
        def rename(split: Optional[Inputs]) -> Optional[dict[str, np.ndarray]]:
            return None if split is None else {names.get(k, k): v for k, v in split.items()}

        return replace(self, eval_inputs=rename(self.eval_inputs), calib_inputs=rename(self.calib_inputs),
                       train_inputs=rename(self.train_inputs))

    def eval_subset(self, count: Optional[int], seed: int = 0) -> tuple[Inputs, Optional[np.ndarray]]:
        """(inputs, labels) of `count` evaluation samples drawn at random with `seed`, kept in
        their original order: the same samples in every run. All of them when count is None
        or not smaller than the evaluation set."""
        if count is None or count >= self.n_eval:
            return self.eval_inputs, self.eval_labels
        picked = np.sort(np.random.default_rng(seed).choice(self.n_eval, size=count, replace=False))
        labels = None if self.eval_labels is None else np.asarray(self.eval_labels)[picked]
        return {k: np.asarray(v)[picked] for k, v in self.eval_inputs.items()}, labels

    def qat_params(self) -> dict[str, str]:
        """What of the QAT settings goes into a qat-int8 artifact's cache key and manifest: nothing
        for the defaults (classify on the train split at the recipe's learning rate), so the keys
        of existing artifacts stay."""
        chosen = {"qat_objective": self.qat_objective, "qat_split": self.qat_split}
        if chosen == {"qat_objective": "classify", "qat_split": "train"}:
            chosen = {}
        if self.qat_learning_rate is not None:
            chosen["qat_learning_rate"] = self.qat_learning_rate
        return chosen

    def qat_label(self) -> str:
        """The non-default QAT settings as a qat-int8 row's recipe column adds them, e.g.
        "distill, calib split, lr=5e-06"; "" for the defaults."""
        chosen = self.qat_params()
        parts = [self.qat_objective, f"{self.qat_split} split"] if "qat_objective" in chosen else []
        if self.qat_learning_rate is not None:
            parts.append(f"lr={self.qat_learning_rate:g}")
        return ", ".join(parts)

    def fingerprint(self) -> str:
        """Content hash of every split, so a change of data changes every cache key."""
        h = hashlib.sha256()
        for split in (self.eval_inputs, self.calib_inputs, self.train_inputs or {}):
            for key in sorted(split):
                arr = np.ascontiguousarray(split[key])
                h.update(key.encode())
                h.update(str(arr.dtype).encode() + str(arr.shape).encode())
                h.update(arr.tobytes())
        for labels in (self.eval_labels, self.train_labels):
            if labels is not None:
                h.update(np.ascontiguousarray(labels).tobytes())
        return h.hexdigest()[:16]


def load_npz(path: Union[str, Path], input_name: str = "input") -> Dataset:
    """Load a user's dataset from a `.npz` file.

    Keys: `x_eval`, `x_calib` (required), `y_eval` (labels, needed by top-1),
    optionally `x_train`, `y_train`, and `y_calib` (labels of the calibration split, which
    keep_float="auto" scores a label metric on). For several model inputs, use
    `x_eval__<input>` / `x_calib__<input>` / `x_train__<input>` instead of `x_*`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def split(prefix: str) -> Optional[dict[str, np.ndarray]]:
        if prefix in arrays:
            return {input_name: arrays[prefix]}
        named = {k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "__")}
        return named or None

    eval_inputs, calib_inputs = split("x_eval"), split("x_calib")
    missing = [k for k, v in (("x_eval", eval_inputs), ("x_calib", calib_inputs)) if v is None]
    if missing:
        raise DataError(f"data file {path} lacks {', '.join(missing)} (it has: {', '.join(sorted(arrays))})")
    return Dataset(
        name=path.name,
        eval_inputs=eval_inputs,
        calib_inputs=calib_inputs,
        eval_labels=arrays.get("y_eval"),
        train_inputs=split("x_train"),
        train_labels=arrays.get("y_train"),
        source=str(path),
        calib_labels=arrays.get("y_calib"),
    )


DataSource = Union[str, Path, Dataset, Callable[[], Dataset]]


def resolve_data(source: DataSource, input_name: str = "input") -> Dataset:
    """A `.npz` path, a Dataset, or a zero-argument loader returning a Dataset."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, Path)):
        return load_npz(source, input_name)
    if callable(source):
        data = source()
        if not isinstance(data, Dataset):
            raise DataError(f"data loader {getattr(source, '__name__', source)!r} returned {type(data).__name__}, not a harness.data.Dataset")
        return data
    raise DataError(f"data must be a .npz path, a Dataset or a loader function, not {type(source).__name__}")


def _dims(shape: Sequence) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else "?" for d in shape) + ")"


def bind_inputs(dataset: Dataset, model_inputs: Sequence[TensorSpec], model: str) -> Dataset:
    """The dataset with its inputs named as the model's, checked against the model's shapes and dtypes.

    A model with one input takes the data's one input whatever either is called (`x_eval` in a
    .npz is named "input"); with several inputs the names must match (`x_eval__<name>`).
    `model` names the model and its file for the error messages.
    """
    wanted = [spec.name for spec in model_inputs]
    have = list(dataset.input_names)
    if set(wanted) != set(have):
        if len(wanted) == 1 and len(have) == 1:
            dataset = dataset.renamed({have[0]: wanted[0]})
        else:
            missing = [n for n in wanted if n not in have]
            raise DataError(
                f"{model} takes inputs {wanted}, but data {dataset.name!r} has {have}"
                + (f" (missing: {missing})" if missing else "")
                + "; in a .npz name each input's arrays x_eval__<input>, x_calib__<input> (and x_train__<input>)"
            )
    for spec in model_inputs:
        for split, arrays in (("x_eval", dataset.eval_inputs), ("x_calib", dataset.calib_inputs),
                              ("x_train", dataset.train_inputs or {})):
            if spec.name not in arrays:
                continue
            array = np.asarray(arrays[spec.name])
            model_dims = tuple(spec.shape[1:]) if spec.shape else ()
            fixed = [(i, d) for i, d in enumerate(model_dims) if isinstance(d, int) and d > 0]
            sample = array.shape[1:]
            if len(sample) != len(model_dims) or any(sample[i] != d for i, d in fixed):
                raise DataError(
                    f"{model}: input {spec.name!r} takes samples of shape {_dims(model_dims)} ({spec.dtype}), but "
                    f"{split} of data {dataset.name!r} has samples of shape {_dims(sample)} (array {array.shape})"
                )
            model_dtype = np.dtype(spec.dtype) if spec.dtype in np.sctypeDict else None
            if model_dtype is not None and not _castable(array.dtype, model_dtype):
                raise DataError(
                    f"{model}: input {spec.name!r} takes {model_dtype.name}, but {split} of data {dataset.name!r} "
                    f"is {array.dtype.name}; convert the data (e.g. token ids as integers, pixels as float32)"
                )
    return dataset


def _castable(data: np.dtype, model: np.dtype) -> bool:
    """Data the runner may cast to the model's dtype without changing its meaning."""
    if np.issubdtype(model, np.floating):
        return np.issubdtype(data, np.number) and not np.issubdtype(data, np.complexfloating)
    if np.issubdtype(model, np.integer) or model == np.bool_:
        return np.issubdtype(data, np.integer) or data == np.bool_
    return data == model


def batches(inputs: Inputs, batch_size: int):
    """Yield dicts of consecutive slices (the last one may be short)."""
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch_size):
        yield {k: v[start:start + batch_size] for k, v in inputs.items()}
