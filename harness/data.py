"""Datasets: the real data a model is calibrated, trained and evaluated on.

Inputs are dicts from the model's input name to an array whose first axis is the
sample axis, so one code path serves single-input CNNs and multi-input transformers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import numpy as np

Inputs = Mapping[str, np.ndarray]


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

    def __post_init__(self) -> None:
        for split in ("eval_inputs", "calib_inputs"):
            value = getattr(self, split)
            if not value:
                raise DataError(f"dataset {self.name!r}: {split} is empty")
            counts = {k: len(v) for k, v in value.items()}
            if len(set(counts.values())) != 1:
                raise DataError(f"dataset {self.name!r}: {split} inputs differ in sample count: {counts}")
        n_eval = len(next(iter(self.eval_inputs.values())))
        if self.eval_labels is not None and len(self.eval_labels) != n_eval:
            raise DataError(
                f"dataset {self.name!r}: {n_eval} evaluation samples but {len(self.eval_labels)} labels"
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
    optionally `x_train`, `y_train`. For several model inputs, use
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


def batches(inputs: Inputs, batch_size: int):
    """Yield dicts of consecutive slices (the last one may be short)."""
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch_size):
        yield {k: v[start:start + batch_size] for k, v in inputs.items()}
