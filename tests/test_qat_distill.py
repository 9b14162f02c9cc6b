"""qat-int8 for a model without labels (MiniLM's sentences): self-distillation, declared by the
dataset (Dataset.qat_objective "distill" on Dataset.qat_split), in the fine-tune every torch QAT
recipe shares (harness/quantize/qat_fine_tune.py). On a tiny real embedder (an MLP whose output
is L2-normalized, as MiniLM's) over real digits images: the fine-tune lowers the distillation
loss, the converted int8 model stays close to fp32, the manifest and the cache key say the
objective, a dataset that cannot serve it is n/a with the reason, and the classify default
leaves the keys of existing QAT artifacts as they were."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.artifacts import ArtifactCache, content_key
from harness.data import DataError, Dataset
from harness.metrics import cosine_to_fp32
from harness.models import digits_cnn
from harness.models.digits_cnn import load_data
from harness.models.spec import ModelSpec
from harness import settings
from harness.quantize import RECIPES, qat_torch, recipes_for
from harness.quantize.base import BuildContext, NotApplicable
from harness.training import deterministic_torch


def _embedder(ctx):
    import torch

    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 48), torch.nn.ReLU(),
                                            torch.nn.Linear(48, 16))

        def forward(self, x):
            return torch.nn.functional.normalize(self.body(x), dim=1)

    with deterministic_torch(0):  # the same weights in every process: they are in the cache key
        return Embedder().eval()


def _unlabelled(**qat) -> Dataset:
    """digits' images without labels: 200 calibration images (the QAT split), 200 to score."""
    digits = load_data()
    return Dataset("digits-unlabelled", {"input": digits.eval_inputs["input"][:200]}, digits.calib_inputs, **qat)


def _context(tmp_path, data: Dataset) -> BuildContext:
    spec = ModelSpec(name="tiny-embedder", data=data, metric="cosine_to_fp32", torch_factory=_embedder)
    return BuildContext(spec, data, ArtifactCache(tmp_path / "artifacts"), tmp_path / "models")


def _outputs(module, data: Dataset) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(data.eval_inputs["input"]))).numpy()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The eager torch qat-int8 artifact of the embedder, distilled on the calibration split, and
    its eager PT2E static-int8 twin (same quantizer, calibrated on the same split)."""
    data = _unlabelled(qat_objective="distill", qat_split="calib")
    ctx = _context(tmp_path_factory.mktemp("distill"), data)
    qat, _ = ctx.artifact(qat_torch.torch_recipe())
    (static_recipe,) = [r for r in recipes_for("torch", "static-int8") if r.slug == "pt2e-x86"]
    static, _ = ctx.artifact(static_recipe)
    return ctx, qat, static


def _loaded(artifact):
    import importlib

    import torch

    from harness.quantize.pt2e_torch import RUNTIME_REQUIRES

    for module in RUNTIME_REQUIRES:
        importlib.import_module(module)
    return torch.export.load(str(artifact.model_file)).module()


def test_the_fine_tune_lowers_the_distillation_loss_and_the_manifest_says_the_objective(built):
    _, qat, _ = built
    notes = qat.manifest["notes"]
    losses = notes["epoch_mean_loss"]
    assert len(losses) == notes["qat"]["epochs"] and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert notes["qat"]["objective"] == "distill" and notes["qat"]["split"] == "calib"
    assert notes["train_samples"] == 200  # the calibration split: the evaluation one is never trained on
    assert qat.manifest["params"]["qat_objective"] == "distill"  # the manifest's params, as the key's
    assert notes["recipe"].endswith("[distill, calib split]")  # the row's recipe column says it too


def test_the_distilled_int8_model_stays_close_to_fp32(built):
    ctx, qat, static = built
    data = ctx.dataset
    reference = {"output": _outputs(ctx.torch_module, data)}
    got = cosine_to_fp32({"output": _outputs(_loaded(qat), data)}, None, reference)
    calibrated = cosine_to_fp32({"output": _outputs(_loaded(static), data)}, None, reference)
    assert got > 0.9
    # the fine-tune starts from the fp32 weights and pulls towards fp32's outputs: it ends no
    # further from them than post-training calibration, within the spread of its own cosines
    spread = float(np.std([cosine_to_fp32({"output": _outputs(_loaded(qat), data)[i:i + 1]}, None,
                                          {"output": reference["output"][i:i + 1]}) for i in range(data.n_eval)]))
    assert got > calibrated - spread, (got, calibrated, spread)


def test_a_distill_dataset_without_its_split_is_na_and_an_eval_split_is_refused(tmp_path):
    ctx = _context(tmp_path, _unlabelled(qat_objective="distill"))  # the train split it names does not exist
    with pytest.raises(NotApplicable, match="has none .*qat_split='calib'"):
        ctx.artifact(qat_torch.torch_recipe())
    labelless = _context(tmp_path, _unlabelled(qat_split="calib"))  # classify, and the split has no labels
    with pytest.raises(NotApplicable, match="qat_objective='distill'"):
        labelless.artifact(qat_torch.torch_recipe())
    with pytest.raises(DataError, match="never trains on the evaluation split"):
        _unlabelled(qat_objective="distill", qat_split="eval")
    # litert-torch's QAT takes the classify objective only (tflite_torch.DISTILL_NA says why)
    distill = _context(tmp_path, _unlabelled(qat_objective="distill", qat_split="calib"))
    (litert,) = [r for r in recipes_for("tflite", "qat-int8") if r.slug == "litert-torch"]
    with pytest.raises(NotApplicable, match="classify objective only"):
        distill.artifact(litert)


def test_the_objective_is_in_qat_keys_only_and_the_classify_default_keeps_the_keys(tmp_path):
    digits = BuildContext(digits_cnn, load_data(), ArtifactCache(tmp_path / "a"), settings.cache_dir() / "models")
    torch_sourced = [r for framework in RECIPES for r in recipes_for(framework, "qat-int8") if r.source != "keras"]
    assert {r.framework for r in torch_sourced} == {"torch", "onnxruntime", "tflite"}
    for recipe in torch_sourced:
        assert digits.key_parts(recipe)["params"] == dict(recipe.params)  # as before the objective existed
    distill = _context(tmp_path, _unlabelled(qat_objective="distill", qat_split="calib"))
    classify = _context(tmp_path, replace(distill.dataset, qat_objective="classify", qat_split="train"))
    recipe = qat_torch.torch_recipe()
    assert distill.key_parts(recipe)["params"] == dict(recipe.params, qat_objective="distill", qat_split="calib")
    assert content_key(distill.key_parts(recipe)) != content_key(classify.key_parts(recipe))
    slower = replace(distill.dataset, qat_learning_rate=1e-5)  # a learning rate of the data's own is in the key too
    assert _context(tmp_path, slower).key_parts(recipe)["params"]["qat_learning_rate"] == 1e-5
    (static,) = [r for r in recipes_for("torch", "static-int8") if r.slug == "pt2e-x86"]
    assert content_key(distill.key_parts(static)) == content_key(classify.key_parts(static))
