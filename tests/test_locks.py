"""Cross-process locks: concurrent processes asking for the same missing artifact wait for one
build; a lock dies with its holder. Real processes, real files."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.locks import FileLock

REPO = Path(__file__).resolve().parent.parent

# One process asking the cache for key {"k": 1}. The build writes a line to builds.log and,
# to be sure the other process asks while the key is still missing, waits until the other
# one has looked the key up. Every lookup's outcome goes to lookups-<name>.log.
ASK = r"""
import json, sys, time
from pathlib import Path
from harness.artifacts import ArtifactCache, BuiltModel, TensorSpec

root, name, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

class Recording(ArtifactCache):
    def lookup(self, key):
        found = super().lookup(key)
        with open(root / f"lookups-{name}.log", "a") as f:
            f.write("hit\n" if found else "miss\n")
        return found

def build(out):
    with open(root / "builds.log", "a") as f:
        f.write(name + "\n")
    deadline = time.monotonic() + 30
    while not (root / f"lookups-{other}.log").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the other process is now waiting (or, without a lock, building too)
    (out / "model.onnx").write_bytes(b"weights")
    return BuiltModel("model.onnx", (TensorSpec("input", (1,), "float32"),), (), "onnxruntime")

(root / f"ready-{name}").touch()
while not (root / f"ready-{other}").exists():
    time.sleep(0.005)
artifact, built = Recording(root / "cache").get_or_build({"k": 1}, build, {})
print(json.dumps({"built": built, "key": artifact.manifest["key"]}))
"""


def test_two_processes_asking_for_one_missing_artifact_build_it_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {name: subprocess.Popen([sys.executable, "-c", ASK, str(tmp_path), name, other], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, other in (("a", "b"), ("b", "a"))}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results[name] = json.loads(out.strip().splitlines()[-1])
    builds = (tmp_path / "builds.log").read_text().split()
    assert len(builds) == 1, builds
    builder, waiter = builds[0], "b" if builds[0] == "a" else "a"
    # the premise: the other process asked while the artifact did not exist yet
    assert (tmp_path / f"lookups-{waiter}.log").read_text().split()[0] == "miss"
    assert results[builder]["built"] and not results[waiter]["built"]
    assert results["a"]["key"] == results["b"]["key"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [results["a"]["key"]]  # no lock file or temp left


def test_a_lock_dies_with_its_holder(tmp_path):
    path = tmp_path / "board.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
                               "from harness.locks import FileLock; FileLock(sys.argv[1]).acquire(); print('held', flush=True);"
                               "time.sleep(600)", str(path), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(path)
        assert not lock.acquire(block=False)
        assert not lock.acquire(timeout=0.2)
    finally:
        holder.kill()
        holder.wait()
    started = time.monotonic()
    assert lock.acquire(timeout=10)  # the kernel released it when the holder died
    assert time.monotonic() - started < 5
    lock.release()


def test_shared_locks_exclude_an_exclusive_one(tmp_path):
    path = tmp_path / "host.lock"
    one, two = FileLock(path, shared=True), FileLock(path, shared=True)
    assert one.acquire(block=False) and two.acquire(block=False)
    exclusive = FileLock(path)
    assert not exclusive.acquire(block=False)
    one.release()
    two.release()
    assert exclusive.acquire(block=False)
    exclusive.release()
