"""The work the PT2E builds share or skip (issue 21, a cold quick job's build time) leaves the
converted graphs as they were: a dynamic-int8 build calibrated with one batch converts to the
graph the whole calibration split gives (its activations are quantized per call: only the
weights' observers hold state), and the fp32 capture the static-int8 / mixed / dynamic-int8
builds of a context share gives the graph a capture of its own gives. Compared on digits-cnn:
the converted graph's code and every tensor it holds, bit for bit."""
from __future__ import annotations

import pytest

from harness import settings
from harness.artifacts import ArtifactCache
from harness.models import digits_cnn
from harness.models.digits_cnn import load_data
from harness.quantize import pt2e_torch
from harness.quantize.base import BuildContext
from harness.quantize.torch_export import fp32_copy

CACHE = settings.cache_dir()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> BuildContext:
    return BuildContext(digits_cnn, load_data(), ArtifactCache(tmp_path_factory.mktemp("artifacts")), CACHE / "models")


def _prepared(ctx: BuildContext, quantizer: str, captured=None, **kw):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if quantizer == "xnnpack":
        pytest.importorskip("executorch")
    graph = captured if captured is not None else pt2e_torch.capture(fp32_copy(ctx), ctx)
    return prepare_pt2e(graph, pt2e_torch.make_quantizer(quantizer, **kw))


def _converted(prepared):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(prepared)


def _differences(a, b) -> list[str]:
    """What differs between two converted graphs: their code, or a tensor they hold (bit for bit)."""
    import torch

    if a.code != b.code:
        return ["code"]
    state_a, state_b = a.state_dict(), b.state_dict()
    if sorted(state_a) != sorted(state_b):
        return ["tensor names"]
    return [name for name in state_a if not torch.equal(state_a[name], state_b[name])]


def _same(a, b) -> None:
    assert _differences(a, b) == []


@pytest.mark.parametrize("quantizer", ["x86", "xnnpack"])
def test_a_dynamic_build_has_only_weight_observers_and_one_batch_converts_as_the_whole_split(ctx, quantizer):
    whole = _prepared(ctx, quantizer, is_dynamic=True)
    assert pt2e_torch.data_observers(whole) == []
    n = pt2e_torch.calibrate(whole, ctx)
    one = _prepared(ctx, quantizer, is_dynamic=True)
    seen = pt2e_torch.calibrate_weights_only(one, ctx)
    assert seen == pt2e_torch.CALIBRATION_BATCH < n  # the premise: the split is more than one batch
    _same(_converted(one), _converted(whole))


def test_static_int8_observes_activations_and_calibrates_on_the_whole_split(ctx):
    """The opposite case: a static graph's activation observers hold statistics, so
    calibrate_weights_only would not stop after one batch, and one batch converts differently."""
    whole = _prepared(ctx, "x86")
    assert pt2e_torch.data_observers(whole)
    n = pt2e_torch.calibrate_weights_only(whole, ctx)
    assert n == len(next(iter(ctx.dataset.calib_inputs.values())))
    one = _prepared(ctx, "x86")
    pt2e_torch.calibrate(one, ctx, batches_at_most=1)
    assert _differences(_converted(one), _converted(whole))


@pytest.mark.parametrize("keep", [[], ["conv1", "fc2"]])
def test_builds_from_the_shared_fp32_capture_convert_as_from_their_own(ctx, keep):
    """static-int8 (nothing kept) and mixed (digits-cnn's first and last layers kept float, what
    mixed keeps by default) from the context's one capture, twice (the second copy taken after
    the first build rewrote its own), against a capture of their own."""
    own = _prepared(ctx, "x86", keep_float=keep)
    pt2e_torch.calibrate(own, ctx)
    expected = _converted(own)
    for _ in range(2):
        shared = _prepared(ctx, "x86", captured=pt2e_torch.fp32_capture(ctx), keep_float=keep)
        pt2e_torch.calibrate(shared, ctx)
        _same(_converted(shared), expected)


def test_each_build_gets_a_private_copy_of_the_capture(ctx):
    import torch

    first, second = pt2e_torch.fp32_capture(ctx), pt2e_torch.fp32_capture(ctx)
    assert first is not second and first.code == second.code
    pairs = list(zip(first.parameters(), second.parameters()))
    assert pairs and all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in pairs)


@pytest.mark.parametrize("dynamic", [False, True])
def test_the_reference_with_its_weights_dequantized_once_gives_the_converted_graph_outputs_bit_for_bit(ctx, dynamic):
    """What a package or program is compared with at build time: the converted graph with its
    constant dequantizations computed once (pt2e_torch.weights_dequantized_once), sample by
    sample as the checks call it; the converted graph itself is left as it was."""
    import torch

    from harness.quantize.torch_export import example_inputs

    prepared = _prepared(ctx, "x86", is_dynamic=dynamic)
    pt2e_torch.calibrate(prepared, ctx)
    converted = _converted(prepared)
    code = converted.code
    reference = pt2e_torch.weights_dequantized_once(converted)

    def constant_dequantizations(gm) -> int:
        return sum(1 for n in gm.graph.nodes if n.op == "call_function" and pt2e_torch._op_name(n) in pt2e_torch.DEQUANTIZE
                   and all(a.op == "get_attr" for a in n.all_input_nodes))

    assert constant_dequantizations(converted) >= 4  # the premise: digits-cnn's 4 int8 weights are dequantized per call
    assert constant_dequantizations(reference) == 0
    assert converted.code == code
    feed = example_inputs(ctx, 8)
    with torch.inference_mode():
        for i in range(8):
            sample = tuple(x[i:i + 1] for x in feed)
            assert torch.equal(reference(*sample), converted(*sample))
    module = ctx.torch_module
    assert pt2e_torch.weights_dequantized_once(module) is module  # not a graph: as it is
