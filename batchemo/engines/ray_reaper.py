"""Ends what is left of batchemo's private local Ray once its driver is gone, however it went.

Ray's kernel fate sharing (PR_SET_PDEATHSIG) kills the processes ray.init started (gcs_server,
raylet, dashboard, monitors) with a driver that is killed (kill -9, the OOM killer), but not the
raylet's own children: its dashboard and runtime-env agents (~85 MB each) notice at once that the
raylet is gone, then spend 60 s trying to tell the dead GCS so (a timeout fixed in Ray's
`publish_error_to_driver`; no setting shortens it, gcs_rpc_server_reconnect_timeout_s included).
The session folder is left behind as well.

`ray_session` starts this script before ray.init, with the private temp folder it gives Ray. The
script blocks on its stdin, a pipe only the driver holds: EOF means the driver closed it after
ray.shutdown() or died. It then SIGKILLs this user's processes that hold a file open in that
folder (every process of that Ray writes its logs there; the agents' command lines and
environments are no help, setproctitle overwrites them), and removes the folder.

Standard library only, and run by path (`python -I -S ray_reaper.py TEMP`): it starts in a few
milliseconds and imports nothing of batchemo. Linux only (it reads /proc).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path


def pids_using(folder: str) -> list[int]:
    """This user's processes (but this one and its parent) with a file open below `folder`."""
    prefix = os.path.join(os.path.realpath(folder), "")
    skip = {str(os.getpid()), str(os.getppid())}  # the parent: a driver that closed the pipe
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name in skip:
            continue
        with contextlib.suppress(OSError):  # another user's process, or one that just ended
            if any(os.readlink(fd).startswith(prefix) for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return pids


def reap(folder: str) -> None:
    """SIGKILL the processes of the Ray whose temp folder is `folder`, and remove the folder."""
    for pid in pids_using(folder):
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    # Ctrl-C, a closed terminal or a group SIGTERM end the driver, which then needs this script.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns at EOF: the driver never writes
    reap(sys.argv[1])


if __name__ == "__main__":
    main()
