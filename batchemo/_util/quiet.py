"""Muting file descriptor 2 around C++ code that prints where Python's logging cannot reach."""

import contextlib
import os
import sys


@contextlib.contextmanager
def fd2_silenced():
    """Within the block, whatever anyone writes to fd 2 goes to /dev/null (cron mails stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
