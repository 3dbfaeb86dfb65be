"""TensorFlow's C++ log lines, filtered out of file descriptor 2 for the command."""

from __future__ import annotations

import os
import re
import sys

__all__ = ["NativeLogFilter"]

# TensorFlow's C++ runtime logs through absl/glog straight to file descriptor
# 2: "I0000 00:00:1764000000.123456   4242 cpu_feature_guard.cc:227] ..."
# (the seconds count from the epoch until absl is initialised), before
# TF 2.16 "2024-01-01 12:00:00.123456: I tensorflow/...". Neither
# TF_CPP_MIN_LOG_LEVEL nor Python's sys.stderr can stop all of it in TF 2.21
# (absl prints its "before InitializeLog" notice regardless), so the command
# filters the descriptor itself. Two messages continue on a second line: the
# CPU-instruction notice and the failing node of a kernel error. Fatal lines
# ("F0000 ...") are kept: they explain the crash that follows.
_NATIVE_LINE = re.compile(
    rb"^\r?(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .*rebuild TensorFlow"
    rb"|\t \[\[\{\{node )"
)
# First bytes of a partial line that may still turn into a native log line.
_NATIVE_START = b"IWET\t0123456789"


class NativeLogFilter:
    """Drop TensorFlow's C++ log lines from file descriptor 2 while active.

    Descriptor 2 is pointed at a pipe; a thread forwards everything that is
    not a native log line to the original standard error as it arrives
    (partial lines too, so that progress bars still move), and the original
    descriptor is restored on exit. Set up before TensorFlow is imported:
    its start-up lines come at import.
    """

    def __init__(self, enabled=True):
        self.enabled = enabled and os.name == "posix"
        self.thread = None

    def __enter__(self):
        if not self.enabled:
            return self
        import threading

        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            return self
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(
            target=self._pump, args=(read,), name="tfhess-linop-stderr", daemon=True
        )
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        # Restoring descriptor 2 closes the pipe's last write end: the thread
        # reads what is left, then end-of-file.
        os.dup2(self.saved, 2)
        self.thread.join(timeout=5.0)
        os.close(self.saved)
        self.thread = None
        return False

    def _pump(self, read):
        import select

        pending, forwarding = b"", False
        try:
            while True:
                if pending:
                    # A held-back partial line that does not complete soon is
                    # not a log line (glog writes whole lines at once).
                    ready, _, _ = select.select([read], [], [], 0.1)
                    if not ready:
                        self._write(pending)
                        pending, forwarding = b"", True
                        continue
                chunk = os.read(read, 65536)
                if not chunk:
                    if pending and not _NATIVE_LINE.match(pending):
                        self._write(pending)
                    return
                *lines, tail = (pending + chunk).split(b"\n")
                pending, kept = b"", []
                for line in lines:
                    if forwarding or not _NATIVE_LINE.match(line):
                        kept.append(line + b"\n")
                    forwarding = False
                if tail:
                    if forwarding or tail.lstrip(b"\r")[:1] not in _NATIVE_START:
                        kept.append(tail)
                        forwarding = True
                    else:
                        pending = tail
                self._write(b"".join(kept))
        finally:
            os.close(read)

    def _write(self, data):
        while data:
            try:
                written = os.write(self.saved, data)
            except OSError:
                return
            data = data[written:]
