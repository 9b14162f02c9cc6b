"""The README's "Add your own model" example, run exactly as written there."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example_files() -> dict[str, str]:
    pattern = re.compile(r"<!-- example-file: (\S+) -->\n```python\n(.*?)```", re.S)
    return dict(pattern.findall(README.read_text()))


def test_readme_example_runs(run_suite, tmp_path):
    files = example_files()
    assert set(files) == {"my_model/make_model.py", "my_model/test_my_model.py"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run([sys.executable, str(tmp_path / "my_model/make_model.py")], check=True, timeout=300)
    run = run_suite(tmp_path / "my_model")
    assert run.returncode == 0, run.output
    df = run.results
    assert set(df["model"]) == {"my-mlp-onnx", "my-mlp"}
    assert (df["status"] == "ok").all(), df[["case_id", "status", "reason"]]
    onnx_rows = df[df["model"] == "my-mlp-onnx"]
    assert set(onnx_rows["metric"]) == {"balanced_accuracy"}
    assert (onnx_rows["accuracy"] > 0.85).all()
    mixed = run.row("my-mlp-onnxruntime-mixed-qdq-mixed-b1")
    assert mixed["size_ratio"] > run.row("my-mlp-onnxruntime-static-int8-qdq-b1")["size_ratio"]  # a layer stayed float
