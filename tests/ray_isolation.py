"""Ray tests run each in a pytest of their own (issue 29 item 2). A plugin, not a conftest.py of
tests/engines: test modules import `conftest` by name, and a second conftest.py would shadow the
first; tests/conftest.py imports the hook below.

A Ray driver whose raylet dies is ended by Ray itself ("Node is dead because the health check
failed ... Terminate the process"): in the pytest process that took the whole suite down with no
summary. So a test marked `own_ray` is run again, by its node id, in a child pytest with
BATCHEMO_RAY_CHILD=1 set, under a timeout (`@pytest.mark.own_ray(timeout=...)`, seconds); there
its `local_ray` fixture starts a private local Ray in a temp folder of its own. The parent test
passes, skips or fails as the child did; a child that dies, hangs or ends without a summary fails
that one test with a message saying so, and the suite goes on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = "BATCHEMO_RAY_CHILD"
DEFAULT_TIMEOUT = 900  # seconds: the slowest Ray test takes ~2 min on an idle 2-core machine
_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|skipped|error|errors).*) in [\d.]+s", re.M)


def in_child() -> bool:
    """Whether this pytest is the child that actually runs a Ray test."""
    return os.environ.get(CHILD) == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    marker = pyfuncitem.get_closest_marker("own_ray")
    if marker is None or in_child():
        return None  # run the test here, as usual
    timeout = marker.kwargs.get("timeout", DEFAULT_TIMEOUT)
    root = Path(pyfuncitem.config.rootpath)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           pyfuncitem.nodeid]
    env = {**os.environ, CHILD: "1", "PYTHONUNBUFFERED": "1"}  # output up to a sudden death
    try:
        child = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                               timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        pytest.fail(f"Ray test timed out after {timeout} s in its own pytest (its Ray cluster "
                    f"may have hung); last output:\n{out[-3000:]}", pytrace=False)
    out = child.stdout + child.stderr
    summary = _SUMMARY.search(child.stdout)
    if summary is None:
        pytest.fail(f"Ray test's own pytest died without a summary (exit code "
                    f"{child.returncode}): its Ray cluster most likely died and Ray ended the "
                    f"driver; last output:\n{out[-3000:]}", pytrace=False)
    if child.returncode == 0 and "skipped" in summary.group(1) and "passed" not in summary.group(1):
        reason = re.search(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", child.stdout)
        pytest.skip(reason.group(1) if reason else summary.group(1))
    if child.returncode != 0:
        pytest.fail(f"Ray test failed in its own pytest ({summary.group(1)}):\n{out[-6000:]}",
                    pytrace=False)
    return True  # passed in the child; the body is not run again here
