# quantbench's pytest plugin: --target, the per-case tests of suites/, the report summary. Where quantbench
# is installed its pytest11 entry point (named harness.pytest_plugin) has registered it already and
# this line is a no-op; in a checkout that is not installed it loads the plugin.
pytest_plugins = ["harness.pytest_plugin"]
