"""The runner: measures one artifact in a fresh process on the device itself.

Self-contained on purpose: it imports only the standard library, numpy and the one
runtime it runs, and works on Python 3.8+, because it is copied to edge devices.
Run it as `python -m runner CONFIG.json` with this package's parent on sys.path.
"""
