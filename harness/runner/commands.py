"""Device tools the sensors call (vcgencmd, tegrastats, an external meter), as argv lists.

Which program to run is a target setting (a path or a command line), so a device with
the tool elsewhere still works and tests can put a replay of recorded output in its place.
Standard library only (the runner ships to devices).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Callable, List, Optional, Union

# argv -> the tool's stdout (stderr folded in); raises OSError / subprocess errors
CommandRunner = Callable[[List[str]], str]


def argv_of(setting: Union[None, str, List[str]], default: str) -> Optional[List[str]]:
    """The command a setting names (a string is split like a shell would, a list is taken
    as is), with its program resolved on PATH; None when the program does not exist."""
    if setting is None or setting == "":
        setting = default
    argv = shlex.split(setting) if isinstance(setting, str) else [str(part) for part in setting]
    if not argv:
        return None
    program = argv[0]
    if os.sep in program:
        return argv if os.access(program, os.X_OK) else None
    found = shutil.which(program)
    return [found] + argv[1:] if found else None


def run_command(argv: List[str], timeout_s: float = 5.0) -> str:
    """Run a tool to completion and return what it printed."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s,
                          universal_newlines=True, check=False)
    if done.returncode != 0:
        raise OSError(f"`{' '.join(argv)}` exited with {done.returncode}: {done.stdout.strip()[:200]}")
    return done.stdout
