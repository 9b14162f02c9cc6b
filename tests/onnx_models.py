"""Small real ONNX models for tests: a logistic regression trained on the digits (also as a
suite's model, with its data), a quantization-fragile twin of it, and a model that produces NaN."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_flat():
    from harness.models.digits_cnn import load_data

    d = load_data()
    flat = lambda x: x.reshape(len(x), -1).astype(np.float32)  # noqa: E731
    return flat(d.train_inputs["input"]), d.train_labels, flat(d.calib_inputs["input"]), flat(d.eval_inputs["input"]), d.eval_labels


def write_npz(path: Path, x_eval, y_eval, x_calib, **extra) -> Path:
    np.savez(path, x_eval=x_eval, y_eval=y_eval, x_calib=x_calib, **extra)
    return path


def gemm_model(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["logits"], name="classifier")],
        "logreg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(weight.astype(np.float32), "W"), numpy_helper.from_array(bias.astype(np.float32), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def logistic_regression(path: Path, outlier: float = 0.0) -> Path:
    """Trained on the digits train split. `outlier` puts a huge weight on pixel 0, which
    is 0 in every digit: fp32 accuracy is unchanged, but per-tensor int8 weights lose
    every real weight to rounding, so int8 accuracy collapses (a real budget failure)."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, *_ = digits_flat()
    clf = LogisticRegression(max_iter=2000, random_state=0).fit(x_train, y_train)
    weight = clf.coef_.T.copy()
    weight[0, :] = outlier or weight[0, :]
    return gemm_model(path, weight, clf.intercept_)


def logreg_spec(folder: Path):
    """The logistic regression as a suite's model: logreg.onnx beside its data.npz in `folder`."""
    from harness.models import onnx_model

    _, _, x_calib, x_eval, y_eval = digits_flat()
    logistic_regression(folder / "logreg.onnx")
    write_npz(folder / "data.npz", x_eval, y_eval, x_calib)
    return onnx_model("logreg", folder / "logreg.onnx", data=folder / "data.npz")


def nan_model(path: Path, features: int = 64) -> Path:
    """log(-(|x| + 1)) is NaN for every input."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Abs", ["input"], ["a"]),
         helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
         helper.make_node("Add", ["a", "one"], ["b"]),
         helper.make_node("Neg", ["b"], ["c"]),
         helper.make_node("Log", ["c"], ["logits"])],
        "nan",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", features])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def wide_mlp(path: Path, features: int = 64, width: int = 1024, depth: int = 4, classes: int = 10, seed: int = 0) -> Path:
    """A ReLU MLP of `depth` hidden Gemm layers `width` wide, seeded random weights: a model
    whose calls take milliseconds (at batch 128, ~10-40 ms on one core), long enough that a
    call's latency follows the share of a CPU the runner gets."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [features] + [width] * depth + [classes]
    nodes, weights, previous = [], [], "input"
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(np.zeros(dims[i + 1], np.float32), f"B{i}")]
        last = i == len(dims) - 2
        nodes.append(helper.make_node("Gemm", [previous, f"W{i}", f"B{i}"], ["logits" if last else f"g{i}"], name=f"fc{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"], name=f"relu{i}"))
            previous = f"h{i}"
    graph = helper.make_graph(nodes, "wide_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
