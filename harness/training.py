"""Training that gives the same weights on every cold run of the same machine and libraries.

quantbench trains some models itself (digits-cnn's fp32 weights, the QAT fine-tunes). Their
weights feed the artifact cache key (the cached weights file's hash), so a training that drew
its initial weights from an unseeded generator (torch seeds its default generator at random
in every process here) gave every cold cache other weights, other artifacts and other
accuracies. `deterministic_torch(seed)` is the one way to train with torch: the global
generator seeded before the module is built, one thread (float reductions in a fixed order),
torch's deterministic algorithms, and the caller's settings restored afterwards (batch order
comes from a torch.Generator of the training's own, seeded too).
"""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def deterministic_torch(seed: int, warn_only: bool = False) -> Iterator[None]:
    """Seed torch's global generator, train on one thread with deterministic algorithms
    (`warn_only`: an op without a deterministic kernel warns instead of failing), then put the
    process's thread count and determinism setting back. Build the module inside it."""
    import torch

    threads = torch.get_num_threads()
    strict, lenient = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # one thread keeps float reductions in a fixed order
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(strict, warn_only=lenient)
        torch.set_num_threads(threads)

