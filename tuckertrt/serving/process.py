"""``tuckertrt serve`` as a child process on free loopback ports (for tests, benchmarks and scripts)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tuckertrt.errors import TuckerTRTError

READY_MARK = b"ready: "  # what serve prints on stderr once Triton has loaded the model


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerProcess:
    """Start ``python -m tuckertrt serve MODEL [args]`` logging to ``log``; :meth:`stop` sends SIGTERM."""

    def __init__(self, model: str, log: Path, args: tuple[str, ...] = (), timeout_s: float = 300.0):
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log = Path(log)
        repo = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "tuckertrt", "serve", model, "--http-port", str(self.http_port),
                   "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), *args]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.start_seconds = self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> float:
        start = time.monotonic()
        while READY_MARK not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() - start > timeout_s:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise TuckerTRTError(f"serve did not become ready; its log ends:\n{tail}")
            time.sleep(0.5)
        return time.monotonic() - start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout_s``); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
