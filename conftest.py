# quantbench's pytest plugin: --target, the per-case tests of suites/, the report summary.
pytest_plugins = ["harness.pytest_plugin"]
