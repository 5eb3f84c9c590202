"""A real bookd node for the tests: the binary of BOOKD_BIN (default: the repository's
target/debug or target/release bookd, or CARGO_TARGET_DIR's), on free loopback ports, with a
temporary data directory. A missing binary fails the tests; it never skips them."""

import os
import pathlib
import re
import signal
import subprocess
import threading
import time

from conftest import REPO_DIR

READY = re.compile(r"bookd ready http=(\S+) binary=(\S+)")
#: A debug build recovers and binds in well under a second; this bound is generous.
START_TIMEOUT_S = 60.0


def bookd_bin() -> str:
    configured = os.environ.get("BOOKD_BIN")
    if configured:
        if not os.access(configured, os.X_OK):
            raise RuntimeError(f"BOOKD_BIN={configured} is not an executable file")
        return configured
    roots = []
    if os.environ.get("CARGO_TARGET_DIR"):
        roots.append(pathlib.Path(os.environ["CARGO_TARGET_DIR"]))
    roots.append(REPO_DIR / "target")
    for root in roots:
        for profile in ("debug", "release"):
            candidate = root / profile / "bookd"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    raise RuntimeError("no bookd binary: build it (cargo build --bin bookd) or set BOOKD_BIN")


class Node:
    """One ``bookd serve`` (or ``standby``) process; ``http`` and ``binary`` are its
    addresses once :meth:`start` returned."""

    def __init__(self, data_dir, *args, command="serve", binary=None, http=None):
        self.data_dir = str(data_dir)
        self.args = list(args)
        self.command = command
        self.binary = binary or "127.0.0.1:0"
        self.http = http or "127.0.0.1:0"
        self.process = None
        self.output = []

    def start(self):
        argv = [bookd_bin(), self.command, "--data-dir", self.data_dir, "--http", self.http,
                "--listen", self.binary, *self.args]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"), NO_COLOR="1")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, text=True)
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                match = READY.search(line)
                if match and not ready.is_set():
                    self.http, self.binary = match.group(1), match.group(2)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or self.process.poll() is not None and not \
                any(READY.search(line) for line in self.output):
            self.kill()
            raise RuntimeError(f"bookd did not start: {''.join(self.output)[-2000:]}")
        return self

    def stop(self):
        """SIGTERM, then wait for the clean exit."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def kill(self):
        """SIGKILL: a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self):
        """Starts again on the same ports and data directory."""
        self.kill()
        deadline = time.monotonic() + 30
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
