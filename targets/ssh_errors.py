"""What can go wrong with an ssh target's link, by what the target does about it.

TargetError (targets.base) is for what retrying cannot fix (a refused host key or login);
these two are for the network: connecting failed, or an open connection broke.
"""


class Unreachable(Exception):
    """Connecting to the device failed in a way a later attempt may not (refused, timed out)."""


class ConnectionLost(Exception):
    """An established connection broke, or stopped answering, during an operation."""
