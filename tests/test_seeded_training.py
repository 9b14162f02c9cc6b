"""The models quantbench trains itself give the same weights on every cold run: digits-cnn's
fp32 torch weights feed every artifact's cache key (the weights file's hash,
ModelSpec.torch_identity), and torch seeds its default generator at random in each process,
so a module built before the seed was set started from other weights in every process. The
Keras twin (TFLite's own source) likewise: its weights file's hash is in the keras artifacts' keys."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A fresh process trains digits-cnn into an empty cache, as a cold run does, and prints the
# hash of its state_dict and of the cached weights file (the identity that goes into the keys).
# `draws` random numbers are taken from torch's global generator first, as other work earlier
# in a session would.
TRAIN = """
import hashlib, sys
from pathlib import Path
import torch
from harness.data import resolve_data
from harness.models import digits_cnn as spec
from harness.models.digits_cnn import torch_factory, torch_identity
from harness.models.spec import ModelContext

torch.rand(int(sys.argv[2]))
threads = torch.get_num_threads()
ctx = ModelContext(Path(sys.argv[1]), resolve_data(spec.data))
module = torch_factory(ctx)
digest = hashlib.sha256()
for name, tensor in module.state_dict().items():
    digest.update(name.encode())
    digest.update(tensor.detach().numpy().tobytes())
assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
print(digest.hexdigest(), torch_identity(ctx))
"""


def _train(cache: Path, draws: int) -> tuple[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", TRAIN, str(cache), str(draws)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    state, identity = done.stdout.split()[-2:]
    return state, identity


def test_two_cold_trainings_in_fresh_processes_give_bit_identical_weights(tmp_path):
    first = _train(tmp_path / "a", 0)
    second = _train(tmp_path / "b", 5)  # the global generator already used: the build reseeds it
    assert first[0] == second[0]  # the state_dicts, bit for bit
    assert first[1] == second[1]  # so the cached weights file, and every artifact key built on it
    (weights,) = (tmp_path / "a").glob("digits-cnn-*.pt")
    assert first[1] == hashlib.sha256(weights.read_bytes()).hexdigest()


KERAS = """
import hashlib, sys
from pathlib import Path
from harness.data import resolve_data
from harness.models import digits_cnn as spec
from harness.models.digits_cnn import keras_factory
from harness.models.spec import ModelContext

ctx = ModelContext(Path(sys.argv[1]), resolve_data(spec.data))
digest = hashlib.sha256()
for weights in keras_factory(ctx).get_weights():
    digest.update(weights.tobytes())
print(digest.hexdigest(), keras_factory.identity(ctx))
"""


def test_the_keras_twin_trains_to_the_same_weights_in_fresh_processes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    got = []
    for cache in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", KERAS, str(tmp_path / cache)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        got.append(tuple(done.stdout.split()[-2:]))
    assert got[0] == got[1]  # the weights, and the cached file's hash that the keras artifacts' keys hold
