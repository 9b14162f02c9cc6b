"""The README's "Bring your own model" examples, one per framework, run exactly as written there."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example_files() -> dict[str, str]:
    pattern = re.compile(r"<!-- example-file: (\S+) -->\n```python\n(.*?)```", re.S)
    return dict(pattern.findall(README.read_text()))


def write_example(directory: str, tmp_path: Path) -> Path:
    """The README's two blocks of one example (make_model.py + its suite), written and the first run."""
    files = {name: text for name, text in example_files().items() if name.startswith(directory + "/")}
    assert len(files) == 2 and f"{directory}/make_model.py" in files, sorted(example_files())
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run([sys.executable, str(tmp_path / directory / "make_model.py")], check=True, timeout=600)
    return tmp_path / directory


def test_every_example_in_the_readme_is_run_here():
    assert {name.split("/")[0] for name in example_files()} == {"my_model", "my_keras", "my_export"}


def test_readme_example_runs(run_suite, tmp_path):
    run = run_suite(write_example("my_model", tmp_path))
    assert run.returncode == 0, run.output
    df = run.results
    assert set(df["model"]) == {"my-mlp-onnx", "my-mlp"}
    assert (df["status"] == "ok").all(), df[["case_id", "status", "reason"]]
    onnx_rows = df[df["model"] == "my-mlp-onnx"]
    assert set(onnx_rows["metric"]) == {"balanced_accuracy"}
    assert (onnx_rows["accuracy"] > 0.85).all()
    mixed = run.row("my-mlp-onnxruntime-mixed-qdq-mixed-b1")
    assert mixed["size_ratio"] > run.row("my-mlp-onnxruntime-static-int8-qdq-b1")["size_ratio"]  # a layer stayed float


def test_readme_keras_and_tflite_example_runs(run_suite, tmp_path):
    run = run_suite(write_example("my_keras", tmp_path))
    assert run.returncode == 0, run.output
    df = run.results
    assert set(df["model"]) == {"my-mlp-keras", "my-mlp-tflite"}
    assert (df["status"] == "ok").all(), df[["case_id", "status", "reason"]]
    keras_rows = df[df["model"] == "my-mlp-keras"]
    assert set(keras_rows["metric"]) == {"f1_macro"} and keras_rows["top1"].notna().all()
    assert run.row("my-mlp-keras-tflite-qat-int8-keras-b1")["accuracy"] > 0.85
    fp32 = run.row("my-mlp-tflite-tflite-fp32-file-b1")
    assert fp32["artifact_sha256"] == __import__("hashlib").sha256((tmp_path / "my_keras/mlp.tflite").read_bytes()).hexdigest()


def test_readme_torch_export_example_runs(run_suite, tmp_path):
    run = run_suite(write_example("my_export", tmp_path))
    assert run.returncode == 0, run.output
    df = run.results
    assert "error" not in set(df["status"]), df[["case_id", "status", "reason"]]  # n/a: the other CPU family's recipes
    ok = df[df["status"] == "ok"]
    assert {(r["framework"], r["mode"]) for r in ok.to_dict("records")} == {
        (fw, mode) for fw in ("torch", "onnxruntime") for mode in ("fp32", "static-int8", "mixed")}
    assert (ok["accuracy"] > 0.85).all()
