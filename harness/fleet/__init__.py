"""A run across several devices or pytest-xdist workers, on the harness side.

    shared     what the processes of one run share under results/<run-id>/fleet/: boards,
               per-board fp32 baselines, worker status (SharedRun, Board, StatusProgress)
    display    the pytest-xdist controller's live display of what each worker runs (FleetDisplay)
    recommend  which mode to ship on the whole fleet, and the dashboard heatmap's data

Placements (`--target=a,b,pool:NAME`), board leases and gone boards are the targets' side:
targets/fleet.py.
"""
from harness.fleet.shared import Board, HostExclusive, SharedRun, StatusProgress, board_facts, read_json, write_json

__all__ = ["Board", "HostExclusive", "SharedRun", "StatusProgress", "board_facts", "read_json", "write_json"]
