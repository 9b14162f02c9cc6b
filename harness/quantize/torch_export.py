"""Writing a torch module as a file a device loads without the model's Python source.

Two formats, and the manifest says which one (notes["torch_load"], read by the runner's
torch backend):
  - `torch.export` `.pt2` (torch.export.save / torch.export.load): the default;
  - TorchScript `.pt` (torch.jit.save / torch.jit.load): only where a quantized module
    serializes no other way (the legacy torch.ao dynamic modules hold packed-weight
    script objects that torch.export cannot save).
Every file is loaded back and compared with the module that wrote it before it is kept.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from harness.artifacts import BuiltModel, TensorSpec
from harness.quantize.base import BuildContext, NotApplicable

MAX_BATCH = 4096  # upper bound of the exported batch dimension
EXAMPLE_BATCH = 2  # export traces with this many samples (1 would specialize the batch dim)
PARITY_SAMPLES = 8  # evaluation samples compared between the saved file and the module


@dataclass(frozen=True)
class LoadSpec:
    """How the runner loads and runs the artifact (stored in manifest notes["torch_load"])."""

    format: str = "torch.export"  # torch.export | torchscript | aoti (an AOTInductor package, torch_aoti.py)
    quantized_engine: Optional[str] = None  # torch.backends.quantized.engine to set before loading
    compile: Optional[str] = None  # "inductor": torch.compile(freezing) in the runner, on the target

    def as_note(self) -> dict[str, Any]:
        return {"format": self.format, "quantized_engine": self.quantized_engine, "compile": self.compile}


class ExportFailed(RuntimeError):
    """torch.export (or TorchScript) could not capture the model; the message says how to fix it."""


def fp32_copy(ctx: BuildContext):
    """A private eval-mode copy of the fp32 module: recipes quantize in place."""
    return copy.deepcopy(ctx.torch_module).eval()


def example_inputs(ctx: BuildContext, n: int = EXAMPLE_BATCH) -> tuple:
    import torch

    # clone(): a slice would drag the whole evaluation array into the archive's sample inputs
    return tuple(torch.from_numpy(np.ascontiguousarray(ctx.dataset.eval_inputs[name][:n])).clone()
                 for name in ctx.dataset.input_names)


def batch_dynamic_shapes(ctx: BuildContext) -> tuple:
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return tuple({0: batch} for _ in ctx.dataset.input_names)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def export_program(module, ctx: BuildContext, what: str, batch: Optional[int] = None):
    """torch.export with a dynamic batch dimension, or at a fixed `batch`; failures name the
    model and the fix."""
    import inspect

    import torch

    shapes = None
    if batch is None:
        shapes = batch_dynamic_shapes(ctx)
        params = inspect.signature(module.forward).parameters.values()
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            shapes = (shapes,)  # forward(*inputs): export sees one tuple argument
    try:
        return torch.export.export(module, example_inputs(ctx, batch or EXAMPLE_BATCH), dynamic_shapes=shapes)
    except Exception as exc:
        raise ExportFailed(
            f"torch.export could not capture model {ctx.spec.name} for {what} ({first_line(exc)}); "
            "make forward() export-friendly (no data-dependent Python control flow or unsupported ops) "
            "or drop this torch mode from the suite"
        ) from exc


def drop_unused_state(gm) -> list[str]:
    """Delete parameters and buffers no node reads (after PT2E convert the fp32 weights stay
    attached beside their int8 copies and would be saved twice). Returns what was dropped."""
    used = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    dropped = []
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner_name, _, leaf = name.rpartition(".")
            delattr(gm.get_submodule(owner_name) if owner_name else gm, leaf)
            dropped.append(name)
    return dropped


def _tensor_specs(names: Sequence[str], tensors: Sequence) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, ("batch",) + tuple(t.shape[1:]), str(t.dtype).replace("torch.", ""))
                 for name, t in zip(names, tensors))


def _flat_outputs(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return [o for o in out]


def _output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _parity(reference, loaded, ctx: BuildContext, tolerance: float) -> float:
    """Max abs difference between the in-memory module and the file it wrote."""
    import torch

    feed = example_inputs(ctx, PARITY_SAMPLES)
    with torch.inference_mode():
        want = _flat_outputs(reference(*feed))
        got = _flat_outputs(loaded(*feed))
    worst = 0.0
    for w, g in zip(want, got):
        w, g = w.float(), g.float()
        if not torch.isfinite(w).all():
            raise RuntimeError(f"model {ctx.spec.name} gives non-finite outputs on evaluation samples before saving")
        worst = max(worst, float((w - g).abs().max()))
    scale = max(1.0, max(float(w.float().abs().max()) for w in want))
    if worst > tolerance * scale:
        raise RuntimeError(f"the saved artifact of {ctx.spec.name} differs from the module that wrote it by {worst:.3g} (max abs)")
    return worst


def _strip_debug(program) -> None:
    """Source stack traces are debug info: they name host paths and weigh more than a
    small model's int8 weights. Module paths (nn_module_stack) are kept."""
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)


def tensor_bytes(path: Path) -> int:
    """Bytes of tensor data stored in a .pt2 or TorchScript archive (the rest is graph/code)."""
    import zipfile

    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if "data" in parts[1:2] and not info.filename.endswith((".json", ".pkl")) and "sample_inputs" not in parts:
                total += info.file_size
    return total


def save_exported(module, ctx: BuildContext, out: Path, *, what: str, load: LoadSpec = LoadSpec(),
                  runtime_requires: tuple[str, ...] = (), notes: Optional[dict] = None,
                  tolerance: float = 1e-4, compare_eager: bool = False) -> BuiltModel:
    """torch.export the module, save it as model.pt2, load it back and check it computes the same.
    For a target whose torch cannot read this host's .pt2 (torch_format = "torchscript"): TorchScript."""
    import torch

    if ctx.export.torch_format == "torchscript":
        if load.compile:
            raise NotApplicable(f"{what} compiles a torch.export program on the target, and this target asks for "
                                f"TorchScript files (torch_format = \"torchscript\")")
        return save_torchscript(module, ctx, out, what=what, load=LoadSpec("torchscript", load.quantized_engine),
                                notes=dict(notes or {}, written_as="torchscript (the target's torch_format)"),
                                tolerance=tolerance, compare_eager=compare_eager, runtime_requires=runtime_requires)

    program = export_program(module, ctx, what)
    _strip_debug(program)
    path = out / "model.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return _saved(module, loaded, path, ctx, tolerance, tuple(runtime_requires), dict(notes or {}, torch_load=load.as_note()),
                  compare_eager=compare_eager and not load.compile)  # a compiled artifact compiles on the target


def versus_eager(module, loaded, ctx: BuildContext, rounds: int = 3, round_s: float = 0.1) -> dict[str, Any]:
    """Milliseconds per call (batch 1, this process's threads) of the eager module and of the
    file it was saved as, loaded back: alternating rounds on the build host, median of rounds.
    An exported LSTM can run many times slower than its module; the fp32 row then says so
    rather than report the export's speed as the model's."""
    import statistics
    import time

    import torch

    feed = example_inputs(ctx, 1)

    def per_call_ms(fn) -> float:
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < round_s:
            fn(*feed)
            calls += 1
        return (time.perf_counter() - start) * 1000.0 / calls

    eager, saved = [], []
    with torch.inference_mode():
        for fn in (module, loaded):  # warm both (first calls allocate, TorchScript profiles)
            for _ in range(3):
                fn(*feed)
        for _ in range(rounds):
            eager.append(per_call_ms(module))
            saved.append(per_call_ms(loaded))
    eager_ms, saved_ms = statistics.median(eager), statistics.median(saved)
    return {"eager_ms": eager_ms, "artifact_ms": saved_ms, "ratio": saved_ms / eager_ms if eager_ms > 0 else None,
            "batch": 1, "threads": torch.get_num_threads(), "where": "build host, alternating rounds"}


def _saved(module, loaded, path: Path, ctx: BuildContext, tolerance: float, runtime_requires: tuple,
           facts: dict, compare_eager: bool = False) -> BuiltModel:
    """The BuiltModel of a saved torch artifact, once the reloaded file matches the module."""
    import torch

    max_abs = _parity(module, loaded, ctx, tolerance)
    if compare_eager:
        facts["versus_eager"] = versus_eager(module, loaded, ctx)
    with torch.inference_mode():
        outputs = _flat_outputs(loaded(*example_inputs(ctx)))
    facts.update(saved_max_abs_diff=max_abs, tensor_bytes=tensor_bytes(path))
    return BuiltModel(path.name, _tensor_specs(ctx.dataset.input_names, example_inputs(ctx)),
                      _tensor_specs(_output_names(len(outputs)), outputs), "torch", runtime_requires, facts)


def save_torchscript(module, ctx: BuildContext, out: Path, *, what: str, load: LoadSpec,
                     notes: Optional[dict] = None, tolerance: float = 1e-4, compare_eager: bool = False,
                     runtime_requires: tuple[str, ...] = ()) -> BuiltModel:
    """torch.jit.script (torch.jit.trace when the model is not scriptable), saved as model.pt."""
    import torch

    how = "torch.jit.script"
    try:
        scripted = torch.jit.script(module)
    except Exception as script_exc:
        how = "torch.jit.trace"
        try:
            scripted = torch.jit.trace(module, example_inputs(ctx))
        except Exception as exc:
            raise ExportFailed(
                f"TorchScript could not capture model {ctx.spec.name} for {what} (script: {first_line(script_exc)}; "
                f"trace: {first_line(exc)}); this recipe needs a scriptable or traceable model, drop it from the suite otherwise"
            ) from exc
    path = out / "model.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    return _saved(module, loaded, path, ctx, tolerance, tuple(runtime_requires),
                  dict(notes or {}, torch_load=load.as_note(), torchscript=how), compare_eager=compare_eager)
