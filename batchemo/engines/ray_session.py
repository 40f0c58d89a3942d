"""Where `--engine ray` runs: the Ray it connects to (or starts), and Ray Data kept quiet."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from batchemo.engines import ray_reaper
from batchemo.errors import OutputError

log = logging.getLogger("batchemo")


@contextlib.contextmanager
def ray_session(ray, job):
    """Connect to --ray-address, else RAY_ADDRESS (as `ray job submit` sets it), else start a
    private local Ray; leave a caller's Ray alone."""
    if ray.is_initialized():  # the caller's Ray (tests, a notebook): use it, leave it running
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it; pipeline's must stay
    kwargs = {"include_dashboard": False, "log_to_driver": not job.quiet,
              "logging_level": logging.WARNING}
    temp = reaper = None
    # RAY_ADDRESS as Ray's own tools read it; "auto" finds the cluster started on this machine.
    # Without either: a new instance, never a cluster someone started on this machine.
    address = job.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    if address != "local":
        log.info("Ray: connecting to %s%s", address,
                 "" if job.ray_address else " (RAY_ADDRESS)")
    else:
        # Ray leaves a session folder per start; under cron they pile up in /tmp/ray.
        temp = kwargs["_temp_dir"] = tempfile.mkdtemp(prefix="batchemo-ray-")
        reaper = _start_reaper(temp)
    # A new local Ray turns token authentication on and warns so at every start (cron mail);
    # setting RAY_AUTH_MODE here instead would be too late: Ray reads it when imported.
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_level = auth_log.level
    try:
        try:
            auth_log.setLevel(logging.ERROR)
            ray.init(address=address, **kwargs)
        except Exception as e:
            hint = ""
            if address != "local" and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                hint = ("; a cluster started with `ray start` uses token authentication: set "
                        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on "
                        "the head node")
            raise OutputError(f"cannot start or reach Ray at {address}: "
                              f"{type(e).__name__}: {e}{hint}") from None
        finally:
            auth_log.setLevel(auth_level)
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if reaper:
            _stop_reaper(reaper)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def _start_reaper(temp: str) -> subprocess.Popen | None:
    """ray_reaper.py, which ends this private Ray's leftovers once this process is gone."""
    if not sys.platform.startswith("linux"):
        return None
    # The pipe's write end stays in this process alone (Python's fds are not inherited).
    return subprocess.Popen([sys.executable, "-I", "-S", ray_reaper.__file__, temp],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def _stop_reaper(reaper: subprocess.Popen) -> None:
    """After ray.shutdown(): EOF lets the reaper end any straggler now, and remove the folder."""
    reaper.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        reaper.wait(timeout=10)


@contextlib.contextmanager
def ray_data_quiet(ray):
    """Our files bar replaces Ray Data's progress bars and its per-dataset console log lines."""
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    console = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    levels = [h.level for h in console]
    for h in console:
        h.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars = bars
        for h, level in zip(console, levels, strict=True):
            h.setLevel(level)
