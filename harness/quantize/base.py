"""Recipes and the context they build in.

A recipe is one exact way to produce a (framework, mode) artifact. Its name is the
`recipe` column, e.g. `onnxruntime.quantize_static(QDQ,MinMax,per_channel,U8S8)`.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from harness.artifacts import Artifact, ArtifactCache, BuiltModel, sha256_file
from harness.data import Dataset
from harness.locks import FileLock
from harness.models.files import content_hash
from harness.quantize.host_check import check_loads
from harness.models.spec import ModelContext, ModelSpec
from harness.profiles import ALL_PROFILES
from harness.vocabulary import KEEP_FLOAT_AUTO

if TYPE_CHECKING:
    from targets.base import TargetInfo


class NotApplicable(Exception):
    """This (framework, mode) cannot exist for this model or target; the message says why."""


def require_trainable(spec: ModelSpec, mode: str = "qat-int8") -> None:
    """QAT fine-tunes the model's training code: a torch.export program is an inference graph."""
    if spec.pt2_file is not None:
        raise NotApplicable(f"{mode} fine-tunes the model's trainable code, and {spec.pt2_file.name} is a torch.export "
                            "program (an inference graph: batch norm frozen, dropout gone); bring the module through "
                            "torch_model(factory) for QAT")


@dataclass(frozen=True)
class Recipe:
    framework: str
    mode: str
    name: str  # the `recipe` column: exact API and its settings
    slug: str  # short form used in case ids, e.g. "qdq"
    build: Callable[["BuildContext", Path], BuiltModel]  # writes files into the directory it is given
    params: Mapping[str, Any] = field(default_factory=dict)  # recipe settings, part of the cache key
    libraries: tuple[str, ...] = ()  # distributions whose versions decide the bytes (cache key + manifest)
    # Returns a reason when the recipe cannot run for this model on this target, else None.
    applicable: Optional[Callable[[ModelSpec, "TargetInfo"], Optional[str]]] = None
    # The fp32 model it starts from when a framework has several ("keras" or "torch" for tflite;
    # "" = the spec's only one). A case's baseline is the fp32 recipe of the same source.
    source: str = ""
    # The run profiles that include this recipe (harness/profiles.py): an alternative of a mode
    # (another execution format, a legacy converter) is ("nightly",), out of the quick default.
    profiles: tuple[str, ...] = ALL_PROFILES
    # How the runner executes the artifact when a framework has several ways: "" = its default
    # (torch: a torch.export program run eagerly), "torchscript", "inductor" (torch.compile on the
    # target). A speedup compares like with like: a case's baseline is the fp32 recipe of the same
    # source AND execution (fp32 TorchScript for a TorchScript recipe, compiled for a compiled one).
    execution: str = ""
    # Reference numerics (an eager PT2E q/dq graph, a torchao tensor subclass run eagerly): how
    # accuracy is debugged, not what a user ships. The row's `execution` column says "reference"
    # (else "deployed"); such a row is never a candidate of the answer (harness/history/candidate.py).
    reference: bool = False
    # Batch sizes the artifact can run (compiled packages with static shapes); None = any. A case
    # of another batch is n/a at collection, with batch_reason's line, before anything is built.
    batches: Optional[tuple[int, ...]] = None
    # Returns a reason when the built artifact cannot run on this target at this batch size (what
    # only the artifact tells, e.g. the shapes of its int8 matmuls), else None; the case is then n/a.
    artifact_check: Optional[Callable[[Artifact, "TargetInfo", int], Optional[str]]] = None
    # What of the build host decides the bytes, part of the cache key (compiled packages: the ISA
    # the kernels are compiled for), so a shared cache never hands one host's build to another.
    host_key: Optional[Callable[["BuildContext"], Mapping[str, Any]]] = None

    @property
    def deployment(self) -> str:
        """The row's `execution`: "reference" or "deployed" (docs/architecture.md, vocabulary)."""
        return "reference" if self.reference else "deployed"

    def batch_reason(self, batch_size: int) -> Optional[str]:
        """Why this recipe's artifact cannot run batches of `batch_size`, or None."""
        if self.batches is None or batch_size in self.batches:
            return None
        return (f"{self.name} makes an artifact with static input shapes for batch "
                f"{' or '.join(map(str, self.batches))} and this case runs batch {batch_size}")

    def artifact_reason(self, artifact: Artifact, target: "TargetInfo", batch_size: int) -> Optional[str]:
        return self.artifact_check(artifact, target, batch_size) if self.artifact_check else None

    def not_applicable_reason(self, spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
        # A target may declare frameworks it cannot run at all (tflite on a cuda target).
        unsupported = (target.facts or {}).get("unsupported_frameworks", {}).get(self.framework)
        if unsupported:
            return unsupported
        return self.applicable(spec, target) if self.applicable else None


# The same module ships in another distribution on some hosts (a GPU host has onnxruntime-gpu).
ALTERNATIVE_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime-gpu",), "tensorflow-cpu": ("tensorflow",)}


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for name in names:
        versions[name] = "missing"
        for dist in (name, *ALTERNATIVE_DISTRIBUTIONS.get(name, ())):
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
            versions[name] = version if dist == name else f"{dist}=={version}"
            break
    return versions


def onnx_files(path: Path) -> list[Path]:
    """An ONNX file and the external-data files it references (they are part of the model)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError does not say which file
        raise ValueError(f"cannot read ONNX file {path} ({type(exc).__name__}: {exc}); is it an ONNX model?") from exc
    locations = {
        entry.value
        for tensor in model.graph.initializer if uses_external_data(tensor)
        for entry in tensor.external_data if entry.key == "location"
    }
    return [path] + [path.parent / loc for loc in sorted(locations)]


TORCH_FORMATS = ("torch.export", "torchscript")


@dataclass(frozen=True)
class ExportFormat:
    """Older file formats for a device whose runtimes cannot read this host's newest ones
    (per-target inventory settings; harness/compat.py says when a device needs them)."""

    torch_format: str = "torch.export"  # "torchscript": torch.jit files instead of .pt2 (older torch reads them)
    onnx_opset: Optional[int] = None  # write ONNX files at this opset, stamped with that opset's IR version

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "ExportFormat":
        return cls(settings.get("torch_format", "torch.export"), settings.get("onnx_opset"))

    def key(self, framework: str) -> dict[str, Any]:
        """What goes into an artifact's cache key: only settings that change this framework's files."""
        if framework == "torch" and self.torch_format != "torch.export":
            return {"torch_format": self.torch_format}
        if framework == "onnxruntime" and self.onnx_opset is not None:
            return {"onnx_opset": self.onnx_opset}
        return {}


@dataclass(frozen=True)
class FloatLayers:
    """The layers a `mixed` build keeps float when keep_float="auto", chosen before the build
    (harness.sensitivity.choose_before_build runs the search) and handed to the context."""

    names: tuple[str, ...]
    notes: Mapping[str, Any]  # for the manifest: how they were chosen (the search's table and trace)
    key: Mapping[str, Any]  # for the artifact's cache key: what decides them (the budget and the search settings)


def recipe_id(recipe: Recipe) -> tuple[str, str, str]:
    return recipe.framework, recipe.source, recipe.name


class BuildContext:
    """Everything a recipe may need, built lazily and once per model per session."""

    def __init__(
        self,
        spec: ModelSpec,
        dataset: Dataset,
        cache: ArtifactCache,
        model_cache_dir: Path,
        progress: Callable[[str], None] = lambda message: None,
        keep_float: tuple[str, ...] = (),
        export: ExportFormat = ExportFormat(),
        mixed_budget: Optional[float] = None,
        kept_precision: str = "float32",
    ) -> None:
        self.spec = spec
        self.dataset = dataset
        self.cache = cache
        self.model_cache_dir = Path(model_cache_dir)
        self.progress = progress
        self.keep_float = tuple(keep_float) or spec.sensitive_layers  # suite override, else the model's
        self.export = export
        self.mixed_budget = mixed_budget  # points: the budget keep_float="auto" searches within
        self.kept_precision = kept_precision  # `mixed`: float32, or float16 where the framework can
        self._float_layers: dict[tuple[str, str, str], FloatLayers] = {}  # keep_float="auto": by recipe_id

    @property
    def model_context(self) -> ModelContext:
        return ModelContext(self.model_cache_dir, self.dataset, self.progress)

    @functools.cached_property
    def torch_module(self):
        if self.spec.torch_factory is None:
            raise NotApplicable(f"model {self.spec.name} has no PyTorch source (it is {', '.join(self.spec.sources) or 'empty'})")
        self.progress("building fp32 torch model")
        with self._factory_lock("torch"):
            return self.spec.torch_factory(self.model_context)

    @functools.cached_property
    def keras_model(self):
        """The trained fp32 Keras model (Keras 3, in this process)."""
        if self.spec.keras_factory is None:
            raise NotApplicable(f"model {self.spec.name} has no Keras source (it is {', '.join(self.spec.sources) or 'empty'})")
        self.progress("building fp32 Keras model")
        with self._factory_lock("keras"):
            return self.spec.keras_factory(self.model_context)

    def _factory_lock(self, source: str) -> FileLock:
        """Concurrent processes (xdist workers) wait for one factory call: the first trains and
        caches the weights, the others then load them."""
        return FileLock(self.model_cache_dir / f".lock-{self.spec.name}-v{self.spec.version}-{source}", transient=True)

    @functools.cached_property
    def keras_fingerprint(self) -> str:
        """The Keras weights themselves: part of the key of every recipe whose source is keras."""
        if self.spec.saved_model is not None:  # no Keras model: the directory's hash is in `fingerprint`
            return "saved_model"
        identity = getattr(self.spec.keras_factory, "identity", None)  # e.g. the cached weights file's hash
        if identity is not None:
            found = identity(self.model_context) or (self.keras_model is not None and identity(self.model_context))
            if found:
                return str(found)[:16]
        h = hashlib.sha256()
        for weight in self.keras_model.weights:
            h.update(weight.path.encode() if hasattr(weight, "path") else weight.name.encode())
            h.update(weight.numpy().tobytes())
        return h.hexdigest()[:16]

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identity of the fp32 model: spec version, data, and the weights themselves."""
        h = hashlib.sha256(f"{self.spec.name}:{self.spec.version}:{self.dataset.fingerprint()}".encode())
        if self.spec.onnx_file is not None:
            for path in onnx_files(self.spec.onnx_file):
                h.update(sha256_file(path).encode())
        for path in self.spec.files:  # .tflite, .pt2, .keras, SavedModel: the user's file as it is now
            h.update(content_hash(path).encode())
        if self.spec.torch_factory is not None:
            h.update(self._torch_identity().encode())
        return h.hexdigest()[:16]

    def _torch_identity(self) -> str:
        """The spec's cheap identity of the fp32 torch weights (building the module first if it
        cannot tell yet, e.g. before the weights are trained and cached), else the weights' bytes."""
        hook = self.spec.torch_identity
        if hook is not None:
            found = hook(self.model_context) or (self.torch_module is not None and hook(self.model_context))
            if found:
                return f"identity:{found}"
        h = hashlib.sha256()
        for name, tensor in self.torch_module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def key_parts(self, recipe: Recipe, float_choice: bool = True) -> dict[str, Any]:
        """The artifact's cache key. float_choice=False leaves out what only a `mixed` artifact's
        key holds (its layer names, and with keep_float="auto" what decided the layers): the
        sensitivity search's own key, and the search runs before the layers are handed over."""
        mixed = recipe.mode == "mixed"
        return {
            "model": self.spec.name,
            "model_fingerprint": self.fingerprint,
            "framework": recipe.framework,
            "mode": recipe.mode,
            "recipe": recipe.name,
            "params": self.params(recipe),
            **({"keep_float": list(self.keep_float) if mixed else []} if float_choice else {}),
            **(self.chosen_float_layers(recipe).key if float_choice and mixed and self.searches_float_layers else {}),
            **({"kept_precision": self.kept_precision} if mixed and self.kept_precision != "float32" else {}),
            "libraries": library_versions(recipe.libraries),
            **({"build_host": dict(recipe.host_key(self))} if recipe.host_key else {}),
            **({"keras_fingerprint": self.keras_fingerprint} if recipe.source == "keras" else {}),
            **({"export": self.export.key(recipe.framework)} if self.export.key(recipe.framework) else {}),
        }

    def params(self, recipe: Recipe) -> dict[str, Any]:
        """The recipe's settings, and for qat-int8 the dataset's QAT objective and split where they
        are not the default (they change the fine-tune, so the artifact; Dataset.qat_params)."""
        return dict(recipe.params, **(self.dataset.qat_params() if recipe.mode == "qat-int8" else {}))

    @property
    def searches_float_layers(self) -> bool:
        return self.keep_float == (KEEP_FLOAT_AUTO,)

    def hand_float_layers(self, recipe: Recipe, chosen: FloatLayers) -> None:
        """keep_float="auto": the layers the search chose for `recipe`, before its build."""
        self._float_layers[recipe_id(recipe)] = chosen

    def has_float_layers(self, recipe: Recipe) -> bool:
        return recipe_id(recipe) in self._float_layers

    def chosen_float_layers(self, recipe: Recipe) -> FloatLayers:
        try:
            return self._float_layers[recipe_id(recipe)]
        except KeyError:
            raise RuntimeError(f"keep_float='auto': the float layers of {recipe.name} are chosen before its build "
                               "(harness.sensitivity.choose_before_build(ctx, recipe)), and none were handed over") from None

    def only_float32_kept(self, why: str) -> None:
        """For a `mixed` recipe that keeps its float layers in float32 only: a float16 request is n/a, saying why."""
        if self.kept_precision != "float32":
            raise NotApplicable(f"kept_precision {self.kept_precision}: {why}; float16 kept layers are ai-edge-quantizer's "
                                "(float_casting), in the tflite rows from torch or a .tflite file")

    def float_layers(self, recipe: Recipe) -> tuple[Optional[list[str]], dict[str, Any]]:
        """The layers a `mixed` build keeps float, and the manifest notes saying how they were
        chosen: the suite's / model's names, (keep_float="auto") those the sensitivity search
        handed over before the build, or None: neither names any, the recipe's default (its
        first and last weighted layer)."""
        if not self.searches_float_layers:
            if not self.keep_float:
                return None, {"keep_float_source": "default: first and last weighted layer"}
            return list(self.keep_float), {"keep_float_source": "names (suite keep_float or the model's sensitive_layers)"}
        chosen = self.chosen_float_layers(recipe)
        return list(chosen.names), dict(chosen.notes)

    def artifact(self, recipe: Recipe) -> tuple[Artifact, bool]:
        """Build (or fetch from the cache) the artifact of `recipe` for this model."""
        parts = self.key_parts(recipe)
        describe = {
            "model": self.spec.name,
            "model_version": self.spec.version,
            "framework": recipe.framework,
            "mode": recipe.mode,
            "recipe": recipe.name,
            "params": parts["params"],
            "libraries": parts["libraries"],
        }
        return self.cache.get_or_build(parts, lambda out: check_loads(self._build(recipe, out), out, recipe.name), describe)

    def _build(self, recipe: Recipe, out: Path) -> BuiltModel:
        built = recipe.build(self, out)
        label = self.dataset.qat_label() if recipe.mode == "qat-int8" else ""
        if label:  # the dataset's QAT settings, in the recipe column (its learning rate replaces the recipe's)
            name = built.notes.get("recipe") or recipe.name
            if self.dataset.qat_learning_rate is not None:
                name = re.sub(r",lr=[0-9.e+-]+", "", name)
            built = replace(built, notes=dict(built.notes, recipe=f"{name} [{label}]"))
        if recipe.framework == "onnxruntime" and self.export.onnx_opset is not None:
            from harness.quantize.onnx_format import fit_to_opset

            built = fit_to_opset(out / built.file, self.export.onnx_opset, built, self.dataset)
            fitted = built.notes["onnx_format"]
            written = f"opset {fitted['opset']}, IR {fitted['ir_version']} (target's onnx_opset)"
        elif recipe.framework == "torch" and built.notes.get("written_as"):
            written = "TorchScript (target's torch_format)"
        else:
            return built
        # the recipe column says which older format this target got
        return replace(built, notes=dict(built.notes, recipe=f"{built.notes.get('recipe') or recipe.name} as {written}"))
