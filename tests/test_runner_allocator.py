"""The runner times a call with the C allocator in a settled state (harness/runner/allocator.py):
a block a runtime allocates and frees at every call reuses its pages instead of faulting them
in again from a fresh mmap each time, whatever the process imported before; a user's own malloc
settings are left alone; the result says which state the figures were taken in."""
from __future__ import annotations

import json
import subprocess
import sys

from harness.runner_bundle import stage_runner
from targets.local import runner_env
from tests.runner_job import run_runner

# A runtime's per-call scratch in miniature: malloc 1 MiB, write every page, free; the minor page
# faults each call costs, after a first call that may fault its pages in once.
FAULTS_PER_CALL = """
import ctypes, json, resource, sys
if sys.argv[1] == "settle":
    from runner import allocator
    print(allocator.settle(), file=sys.stderr)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
def call():
    block = libc.malloc(1 << 20)
    ctypes.memset(block, 1, 1 << 20)
    libc.free(block)
call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    call()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20))
"""


def faults_per_call(tmp_path, how: str, **env_extra) -> tuple[float, str]:
    env = dict(runner_env(stage_runner(tmp_path / "runner")), **env_extra)
    proc = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL, how], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr.strip()


def test_a_settled_allocator_reuses_the_pages_a_call_frees(tmp_path):
    # 256 faults a call with 4 KiB pages, 16 where the kernel faults anonymous memory in 64 KiB folios
    fresh, _ = faults_per_call(tmp_path, "fresh")
    assert fresh >= 8, f"premise: a fresh process maps the 1 MiB anew at every call ({fresh} faults a call)"
    settled, said = faults_per_call(tmp_path, "settle")
    assert settled <= fresh / 8, (settled, fresh, said)
    assert "settled at 32 and 64 MiB" in said or "settled at 16 and 32 MiB" in said  # 64- or 32-bit glibc


def test_the_users_own_malloc_settings_are_left_as_they_are(tmp_path):
    # a threshold above the block: glibc serves it from the heap and keeps it, whatever the runner does
    kept, said = faults_per_call(tmp_path, "settle", MALLOC_MMAP_THRESHOLD_="4194304", MALLOC_TRIM_THRESHOLD_="8388608")
    assert said == "as this environment sets it (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)"
    assert kept < 1, kept
    # and a setting that keeps mapping blocks afresh stays in force: the runner does not undo it
    fresh, said = faults_per_call(tmp_path, "settle", MALLOC_MMAP_THRESHOLD_="131072")
    assert said.startswith("as this environment sets it") and fresh >= 8, fresh


def test_the_result_says_which_allocator_state_the_figures_were_taken_in(tmp_path):
    result, _ = run_runner(tmp_path)
    assert result["status"] == "ok"
    assert result["runtime_details"]["allocator"].startswith("glibc ")
