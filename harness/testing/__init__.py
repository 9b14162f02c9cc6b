"""Tools for testing quantbench and the targets it runs on, like `numpy.testing`: public, so that
the harness's own tests, `benchmarks/` and `scripts/` share one implementation (none of them
imports from `tests/`).

- `harness.testing.sshd`: a real OpenSSH server on loopback (generated keys) as an ssh target's
  device, a TCP proxy that cuts or freezes the link, and inventory files from tables;
- `harness.testing.postgres`: a throwaway PostgreSQL server from Debian's packages, for the
  history database;
- `harness.testing.processes`: a free loopback port and a process's descendants (standard
  library only: `scripts/emulated_pi.py` loads it under the system Python).
- `harness.testing.import_graph`: quantbench's import graph and module sizes, read with `ast`
  (tests/test_architecture.py checks them, benchmarks/import_graph.py prints them).
- `harness.testing.checkout_run`: `quantbench run` in a checkout (a fresh clone or this tree),
  timed, as the benchmarks that time or repeat the main job run it.

Nothing here is imported by the harness itself; each module is imported on its own.
"""
