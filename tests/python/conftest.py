"""Fixtures for Shardline end-to-end tests with real Kafka clients.

One broker per test module: a private copy of the binary (so a concurrent
`cargo build` cannot swap it under a running test), a free loopback port, a
fresh data directory, SIGTERM at teardown and a check that it exited cleanly.
A module may set BROKER_ARGS (extra `serve` arguments, e.g. `--set k=v`);
`broker.restart()` stops the broker and starts it on the same port and data
directory.

Environment:
  SHARDLINE_BIN   broker binary (default: <repo>/target/debug/shardline)
"""

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_BIN = os.path.join(REPO, "target", "debug", "shardline")
BIN_WAIT_S = 180  # how long to wait for a binary that a rebuild removed
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


def _die_with_parent():
    """Runs in the child before exec: SIGTERM the broker if pytest dies."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def shardline_bin(tmp_path_factory):
    """A private copy of the broker binary, taken once per test session."""
    src = os.environ.get("SHARDLINE_BIN", DEFAULT_BIN)
    dst = str(tmp_path_factory.mktemp("bin") / "shardline")
    deadline = time.monotonic() + BIN_WAIT_S
    last_err = None
    while time.monotonic() < deadline:
        try:
            if os.path.isfile(src) and os.access(src, os.X_OK):
                shutil.copy2(src, dst)
                # The copy must be complete and runnable (a rebuild may have
                # been writing the file while we copied it).
                out = subprocess.run([dst, "--version"], capture_output=True,
                                     timeout=20)
                if out.returncode == 0:
                    return dst
                last_err = out.stderr.decode(errors="replace")
        except (OSError, subprocess.SubprocessError) as e:
            last_err = e
        time.sleep(2)
    pytest.exit(f"shardline binary not usable at {src}: {last_err}", returncode=2)


class Broker:
    def __init__(self, binary, workdir, extra_args=()):
        self.binary = binary
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir)
        self.stderr_path = os.path.join(workdir, "stderr.log")
        self.stdout_path = os.path.join(workdir, "stdout.log")
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, port=None):
        """Start the broker; on `port` if given (a restart), else on a free one."""
        for _attempt in range(5):
            if port is None:
                candidate = _free_port()
                # The broker listens with SO_REUSEPORT, so binding a port that
                # another broker already has succeeds silently: make sure
                # nobody is there before we start.
                if _port_in_use(candidate):
                    continue
            else:
                candidate = port
                deadline = time.monotonic() + 10
                while _port_in_use(candidate) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if _port_in_use(candidate):
                    raise RuntimeError(f"port {candidate} is still in use")
            self.port = candidate
            args = [self.binary, "serve", "--listen", self.bootstrap,
                    "--data-dir", self.data_dir, "--shards", "2"] + self.extra_args
            self._close_logs()
            self._stderr = open(self.stderr_path, "ab")
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                         stderr=self._stderr, cwd=self.workdir,
                                         preexec_fn=_die_with_parent)
            if self._wait_ready():
                return self
            self.kill()
            if port is not None:
                time.sleep(1)
        raise RuntimeError("broker did not start; stderr:\n" + self.stderr_tail())

    def restart(self):
        """SIGTERM, then start again on the same port and data directory.

        Returns the exit code of the stopped process (0 when it shut down
        cleanly); raises if the new one does not start.
        """
        rc = self.stop()
        self.start(port=self.port)
        return rc

    def _close_logs(self):
        f = getattr(self, "_stderr", None)
        if f is not None and not f.closed:
            f.close()

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        buf = b""
        fd = self.proc.stdout.fileno()
        want = f"shardline listening on {self.bootstrap}".encode()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return False  # exited
                buf += chunk
                if want in buf:
                    self._drain_stdout(buf)
                    return True
            elif self.proc.poll() is not None:
                return False
        return False

    def _drain_stdout(self, already):
        # Keep stdout flowing into a file so the pipe never fills.
        import threading

        out = open(self.stdout_path, "ab")
        out.write(already)

        def pump():
            try:
                for line in iter(lambda: self.proc.stdout.read1(4096), b""):
                    out.write(line)
                    out.flush()
            finally:
                out.close()

        threading.Thread(target=pump, daemon=True).start()

    def stderr_tail(self, n=60, levels=None):
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        if levels:
            lines = [ln for ln in lines if any(lv in ln for lv in levels)]
        return "\n".join(lines[-n:])

    def stop(self):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def broker(shardline_bin, request):
    extra = getattr(request.module, "BROKER_ARGS", ())
    workdir = tempfile.mkdtemp(prefix="shardline-e2e-")
    b = Broker(shardline_bin, workdir, extra).start()
    yield b
    rc = b.stop()
    problems = b.stderr_tail(levels=("WARN", "ERROR", "panicked"))
    if problems:
        print(f"\n--- shardline WARN/ERROR lines ({request.module.__name__}) ---\n"
              + problems)
    assert rc == 0, (f"broker did not shut down cleanly on SIGTERM (rc={rc}); "
                     f"stderr tail:\n{b.stderr_tail()}")
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def topic_name(request):
    """A unique, valid topic name for one test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"
