"""all-MiniLM-L6-v2 (pretrained sentence embeddings, from the `minilm` extra) across frameworks,
modes, batch sizes and sequence lengths.

Accuracy is fidelity to fp32: `accuracy` is cosine_to_fp32 (mean cosine of each sentence's
embedding to the fp32 one of the same framework and target) and the row's `nn_agreement`
column says how many sentences keep their fp32 nearest neighbour. Budgets: every int8 mode
keeps at least 0.99 cosine, i.e. loses at most 1 point against fp32 (1.0).
Without the extra, every case is n/a (a skip) with the command that installs it.

Batch 1 is latency, batch 8 throughput; 128 tokens is the model's training length, 32 a short
query. TFLite runs at batch 1 only: litert-torch artifacts have a static batch of 1
(harness/quantize/tflite_torch.py), so a batch-8 case could only fail on its input shape.
`mixed` keeps the six FFN output projections in float (minilm.SENSITIVE_LAYERS says why).
`qat-int8` has no labels to fine-tune on: it distills the fp32 model's own embeddings of the 100
calibration sentences (never scored) into the fake-quantized model (Dataset.qat_objective
"distill", harness/quantize/qat_fine_tune.py); one fine-tune per shape serves the AOTI package and
the ONNX export.

Profiles: the quick default runs one shape, 32 tokens at batch 1 (every framework and mode but
the ExecuTorch programs and onnxruntime's qat-int8, nightly for their cold builds; a
call costs about a quarter of a 128-token one, and so does calibrating the static modes), and
scores a seeded subset of 50 of the 500 sentences (the cosine to fp32 is a mean over sentences:
its 95% interval over 50 is a few tenths of a point, far inside the 1-point budget; the pt2e int8
rows, run eagerly as a q/dq reference, spend most of their case in that pass, so 100 cost 8 s of
a 2-minute warm job). The nightly profile (`--qb-profile nightly`)
runs all four shapes on every sentence.
"""
from harness import Suite
from harness.models import minilm_l6_s32, minilm_l6_s128
from harness.profiles import ALL_PROFILES, NIGHTLY_ONLY

MODES = ("fp32", "fp16", "bf16", "dynamic-int8", "static-int8", "qat-int8", "mixed")
BUDGETS = {"dynamic-int8": 1.0, "static-int8": 1.0, "qat-int8": 1.0, "mixed": 1.0}  # cosine points vs fp32


def suites(model, quick: bool = False):
    # ExecuTorch programs of MiniLM take minutes to lower (static-int8 229 s, dynamic-int8 147 s cold on
    # the 2-vCPU host under load): nightly only, where digits' run in the quick job
    # the ONNX export of the distilled QAT model (the QDQ export: 33 s cold) is nightly too: with it
    # the cold quick job went over its 5 minutes (308 s); the torch AOTI package, from the same
    # fine-tuned program (built either way), stays quick
    b1 = (dict(profiles=ALL_PROFILES, eval_samples={"quick": 50}, nightly_executions=("executorch",),
               nightly_modes={"onnxruntime": ("qat-int8",)}) if quick
          else dict(profiles=NIGHTLY_ONLY))
    return (
        Suite(model=model, frameworks=("torch", "onnxruntime", "tflite"), modes=MODES, budgets=BUDGETS, batch_sizes=(1,), **b1),
        Suite(model=model, frameworks=("torch", "onnxruntime"), modes=MODES, budgets=BUDGETS, batch_sizes=(8,),
              profiles=NIGHTLY_ONLY),
    )


s128_b1, s128_b8 = suites(minilm_l6_s128)
s32_b1, s32_b8 = suites(minilm_l6_s32, quick=True)

# `mixed` with the float layers found by the sensitivity search, beside the hand-picked six of
# s128_b1 in the same nightly run (same fp32 baseline; case ids end in -auto).
s128_b1_auto = Suite(name="minilm-auto", model=minilm_l6_s128, frameworks=("torch", "onnxruntime", "tflite"),
                     modes=("mixed",), keep_float="auto", budgets={"mixed": 1.0}, batch_sizes=(1,), profiles=NIGHTLY_ONLY)

test_s128_b1 = s128_b1.pytest_cases()
test_s128_b1_auto = s128_b1_auto.pytest_cases()
test_s128_b8 = s128_b8.pytest_cases()
test_s32_b1 = s32_b1.pytest_cases()
test_s32_b8 = s32_b8.pytest_cases()
