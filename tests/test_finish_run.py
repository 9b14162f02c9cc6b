"""The end of a run works without pytest: finish_run on a stored run, in a process where
pytest cannot be imported, records the run and says which mode to ship, as the plugin did."""
import json
import os
import subprocess
import sys
import textwrap

from tests import onnx_models

SUITE = """
from pathlib import Path
from harness import Suite
from harness.models import onnx_model

HERE = Path(__file__).parent
logreg = Suite(name="logreg", model=onnx_model("logreg", HERE / "logreg.onnx", data=HERE / "digits_flat.npz"),
               modes=("fp32", "dynamic-int8"), budgets={"dynamic-int8": 1.0})
test_logreg = logreg.pytest_cases()
"""

FINISH = """
import json, sys
sys.modules["pytest"] = None  # any `import pytest` below fails
from pathlib import Path
from harness.finish import FinishOptions, finish_run
from harness.store import Run

run_dir, results_dir, db = map(Path, sys.argv[1:4])
summary = finish_run(Run(run_dir), FinishOptions(results_dir=results_dir, results_db=str(db), dashboard="off",
                                                 tags=("by-hand",)))
print(json.dumps({"run_id": summary.run_id, "recorded": summary.recorded, "answer": summary.answer,
                  "blocks": summary.blocks, "rows": len(summary.rows), "text": summary.text(),
                  "pytest": sorted(m for m, module in sys.modules.items()
                                  if module is not None and m.split(".")[0] in ("pytest", "_pytest"))}))
"""


def test_finish_run_without_pytest(run_suite, tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    _, _, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    onnx_models.write_npz(suite / "digits_flat.npz", x_eval, y_eval, x_calib)
    onnx_models.logistic_regression(suite / "logreg.onnx")
    (suite / "test_logreg.py").write_text(SUITE)
    run = run_suite(suite / "test_logreg.py", extra=["--qb-results-db=off"])
    assert run.returncode == 0, run.output
    assert f"history: run {run.run_dir.name} not recorded (--qb-results-db=off)" in run.output

    db = tmp_path / "by-hand.sqlite"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FINISH), str(run.run_dir), str(tmp_path / "results"),
                           str(db)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["pytest"] == []
    assert summary["run_id"] == run.run_dir.name and summary["rows"] == 2 and summary["recorded"]
    titles = [title for title, _ in summary["blocks"] if title]
    assert titles[0].startswith(f"quantbench: run {run.run_dir.name} on local, quick profile")
    # the same table and the same answer as the pytest run printed
    for line in summary["blocks"][0][1][0].splitlines():
        assert line in run.output
    assert summary["answer"] and all(line in run.output for line in summary["answer"])
    assert f"history: run {run.run_dir.name} recorded in sqlite:///{db} (tags: by-hand)" in summary["text"]

    from harness.history.db import HistoryDB

    assert list(HistoryDB(f"sqlite:///{db}").runs()["run_id"]) == [run.run_dir.name]


def test_store_files_carry_a_format_and_old_ones_still_read(tmp_path):
    import pytest

    from harness.store import JSON_VERSION, Run, RunStore

    store = RunStore(tmp_path, "r1")
    store.write_run({"run_id": "r1"})
    store.write_case({"case_id": "a", "status": "ok"}, [1.0, 2.0])
    assert json.loads((store.dir / "run.json").read_text())["format"] == JSON_VERSION
    assert json.loads((store.cases_dir / "a.json").read_text())["format"] == JSON_VERSION
    # a case file from before the format was recorded (and before rounds and power traces)
    (store.cases_dir / "b.json").write_text(json.dumps({"row": {"case_id": "b", "status": "ok"}, "latencies_ms": [3.0]}))
    run = Run(store.dir)
    assert [r["case_id"] for r in run.case_rows] == ["a", "b"] and run.latencies == {"a": [1.0, 2.0], "b": [3.0]}
    assert list(run.latency_frame()["round"]) == [0, 0, 0] and run.power_traces == {}
    assert run.manifest["run_id"] == "r1" and list(run.rows["case_id"]) == ["a", "b"]
    (store.cases_dir / "c.json").write_text(json.dumps({"format": JSON_VERSION + 1, "row": {"case_id": "c"}}))
    with pytest.raises(ValueError, match="upgrade quantbench"):
        Run(store.dir).records
