"""`--log-json`: every line on stderr is one JSON record, the C libraries' lines included.

FFmpeg, OpenCV and TensorFlow write plain text straight to file descriptor 2, in this process and
in the worker processes that inherit it, which broke a `nightly.jsonl` made of our JSON records.
While a run logs JSON, descriptor 2 is a pipe: a thread passes JSON lines through unchanged and
wraps any other line as a record (`logger: "native"`, level WARNING).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator

ENV = "BATCHEMO_LOG_JSON"  # set while a run logs JSON: its spawned workers log JSON too


class JsonFormatter(logging.Formatter):
    """A log record as one `record` line (fields given as `extra={"fields": {...}}`)."""

    def format(self, r: logging.LogRecord) -> str:
        return record(r.levelname, r.name, r.getMessage(), **getattr(r, "fields", {}))


def log_to_stderr(level: int, as_json: bool) -> None:
    """This process's logging: one handler on stderr, JSON records or plain timed lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_json_here(level: int = logging.WARNING) -> None:
    """Log JSON lines to stderr from this process (a worker of a `--log-json` run)."""
    log_to_stderr(level, as_json=True)


def record(level: str, logger: str, message: str, **fields) -> str:
    """One JSON log line (without newline)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
    return json.dumps({"time": stamp, "level": level, "logger": logger, "message": message,
                       **fields}, default=str)


@contextlib.contextmanager
def native_lines_as_json() -> Iterator[None]:
    """Within the block, plain lines written to fd 2 (by anyone) come out as JSON records."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    marker = f"batchemo-drained-{uuid.uuid4().hex}".encode()
    drained = threading.Event()

    out = os.dup(saved)  # the thread's own: it may outlive the block (see below)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as src, os.fdopen(out, "wb", buffering=0) as dst:
            for raw in src:
                line = raw.rstrip(b"\r\n")
                if line.endswith(marker):  # after a C library's line that had no newline
                    line = line[: -len(marker)]
                    drained.set()
                text = line.decode("utf-8", "replace").strip()
                if not text:
                    continue
                if text.startswith("{"):
                    with contextlib.suppress(ValueError):
                        json.loads(text)
                        dst.write(text.encode() + b"\n")
                        continue
                dst.write((record("WARNING", "native", text) + "\n").encode())

    # daemon: a process that inherited the pipe (Ray, a resource tracker) may hold it open
    thread = threading.Thread(target=pump, name="batchemo-native-log", daemon=True)
    thread.start()
    previous = os.environ.get(ENV)
    os.environ[ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        sys.stderr.flush()
        os.write(2, marker + b"\n")  # everything written before it is out once it comes back
        drained.wait(timeout=5)
        os.dup2(saved, 2)
        os.close(saved)
