"""Bad input a user brings gets a clear error naming the file and what is wrong: a missing file,
a file that is not a model, an input name the data lacks, data of the wrong shape or dtype,
labels of the wrong length, an empty calibration split. A single-input model takes the data's
one input whatever either is called."""
import re

import numpy as np
import pytest

from harness.artifacts import TensorSpec
from harness.data import DataError, Dataset, bind_inputs, load_npz
from harness.models import files
from harness.models.files import ModelFileError
from tests import onnx_models


def dataset(**overrides):
    x = np.zeros((6, 64), dtype=np.float32)
    fields = dict(name="d", eval_inputs={"input": x}, calib_inputs={"input": x[:3]}, eval_labels=np.arange(6) % 2)
    fields.update(overrides)
    return Dataset(**fields)


def test_a_single_input_model_takes_the_datas_one_input_whatever_its_name(tmp_path):
    model = onnx_models.gemm_model(tmp_path / "x.onnx", np.ones((64, 2)), np.zeros(2))
    import onnx

    m = onnx.load(str(model))
    m.graph.input[0].name = "x"
    m.graph.node[0].input[0] = "x"
    onnx.save(m, str(model))
    bound = bind_inputs(dataset(), files.onnx_inputs(model), "model m")
    assert bound.input_names == ("x",) and set(bound.calib_inputs) == {"x"}
    assert bound.fingerprint() != dataset().fingerprint()  # the name is part of what the artifacts see


def test_several_inputs_must_be_named_and_the_error_lists_both_sides():
    specs = (TensorSpec("input_ids", (None, 8), "int64"), TensorSpec("attention_mask", (None, 8), "int64"))
    ids = np.zeros((4, 8), dtype=np.int64)
    data = Dataset("tokens", {"input_ids": ids, "mask": ids}, {"input_ids": ids, "mask": ids})
    with pytest.raises(DataError) as error:
        bind_inputs(data, specs, "model bert (user ONNX model /m/bert.onnx)")
    message = str(error.value)
    assert "/m/bert.onnx" in message and "['input_ids', 'attention_mask']" in message
    assert "missing: ['attention_mask']" in message and "x_eval__<input>" in message


def test_shape_and_dtype_mismatches_name_the_input_and_the_split():
    with pytest.raises(DataError, match=r"input 'input' takes samples of shape \(32\) \(float32\), but x_eval .* shape \(64\)"):
        bind_inputs(dataset(), (TensorSpec("input", (None, 32), "float32"),), "model m (m.onnx)")
    with pytest.raises(DataError, match=r"x_calib of data 'd' has samples of shape \(64\)"):
        bind_inputs(dataset(eval_inputs={"input": np.zeros((6, 32), np.float32)}),
                    (TensorSpec("input", (None, 32), "float32"),), "model m")
    with pytest.raises(DataError, match="input 'input' takes int64, but x_eval of data 'd' is float32"):
        bind_inputs(dataset(), (TensorSpec("input", (None, 64), "int64"),), "model m")
    # float64 or integer pixels for a float32 model are fine: the runner casts them
    bound = bind_inputs(dataset(eval_inputs={"input": np.zeros((6, 64))}, calib_inputs={"input": np.zeros((3, 64), np.uint8)}),
                        (TensorSpec("input", (-1, 64), "float32"),), "model m")
    assert bound.input_names == ("input",)


def test_labels_of_the_wrong_length_and_empty_splits(tmp_path):
    x = np.zeros((5, 64), dtype=np.float32)
    np.savez(tmp_path / "short_labels.npz", x_eval=x, y_eval=np.zeros(4, np.int64), x_calib=x)
    with pytest.raises(DataError, match=r"5 evaluation samples but 4 labels \(y_eval\)"):
        load_npz(tmp_path / "short_labels.npz")
    np.savez(tmp_path / "no_calib.npz", x_eval=x, y_eval=np.zeros(5, np.int64), x_calib=x[:0])
    with pytest.raises(DataError, match=r"the calib split \(x_calib\) has no samples; static int8, mixed and int16x8 calibrate on it"):
        load_npz(tmp_path / "no_calib.npz")
    np.savez(tmp_path / "train.npz", x_eval=x, x_calib=x, x_train=x, y_train=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"5 training samples but 3 labels \(y_train\)"):
        load_npz(tmp_path / "train.npz")


@pytest.mark.parametrize("kind", ["onnx", "tflite", "pt2", "keras"])
def test_missing_and_garbage_model_files(tmp_path, kind):
    read = files.READERS[kind]
    with pytest.raises(ModelFileError, match=f"model file {tmp_path}/absent.{kind} does not exist"):
        read(tmp_path / f"absent.{kind}")
    garbage = tmp_path / f"garbage.{kind}"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(ModelFileError, match=re.escape(f"{garbage} is not {files.KINDS[kind][0]} (")):
        read(garbage)


def test_a_saved_model_must_be_a_directory_with_saved_model_pb(tmp_path):
    with pytest.raises(ModelFileError, match="SavedModel directory .* does not exist"):
        files.saved_model_inputs(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="is not a TensorFlow SavedModel directory: it has no saved_model.pb"):
        files.saved_model_inputs(tmp_path / "empty")
