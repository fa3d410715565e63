"""Child processes that the engine starts and must end: data-parallel ranks and
federated servers and clients.

A :class:`Child` is a fresh interpreter (``python -m <module> ...``, never a fork of a
process whose torch thread pools are running, nor a ``multiprocessing`` spawn that
would re-run a Snakemake script), whose output a thread copies to the caller's
stderr (the rule's log) with a ``[label]`` prefix, keeping the last lines for error
messages. :func:`exit_with_parent` makes a child end itself when the process that
started it dies without the chance to stop it, so that nothing is left behind.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

LAUNCHER_PID = "CASEBOOK_LAUNCHER_PID"


class Child:
    """One started process; ``stop()`` ends it (terminate, then kill after ``grace`` s)."""

    def __init__(self, label: str, module: str, args: list[str], env: dict[str, str]):
        self.label = label
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        env = {**env, LAUNCHER_PID: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.sink = sys.stderr
        self.copier = threading.Thread(target=self._copy, daemon=True)
        self.copier.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def _copy(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            self.tail.append(line)
            try:
                self.sink.write(f"[{self.label}] {line}")
                self.sink.flush()
            except (ValueError, OSError):  # our stderr was closed meanwhile
                pass

    def stop(self, grace: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.copier.join(10)

    def how_it_ended(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "is still running"
        return f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def exit_with_parent(every: float = 1.0) -> None:
    """End this process if its launcher dies (killed without the chance to stop it).

    The launcher's pid comes from the environment: a launcher that died before this
    child started would otherwise leave it watching its new parent (init) forever."""
    parent = int(os.environ.get(LAUNCHER_PID) or os.getppid())
    if os.getppid() != parent:  # the launcher is already gone
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
