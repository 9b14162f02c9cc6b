"""Small real ONNX models for tests: a logistic regression trained on the digits, a
quantization-fragile twin of it, and a model that produces NaN."""
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
