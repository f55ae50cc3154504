"""Fixtures: real `location` nodes on ephemeral ports of 127.0.0.1, started
from the root crate's built binary and killed at the end.

The binary is $THRIFTY_LOCATION, or target/debug/location at the
repository's root (``cargo build`` or ``cargo test`` there makes it); the
nodes' logs go to target/tmp/python-node-logs/.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

import thrifty_p2p

ROOT = Path(__file__).resolve().parents[2]
# The nodes' logs, beside the Rust tests' (target/tmp/node-logs).
LOGS = ROOT / "target" / "tmp" / "python-node-logs"
_LOG_NUMBERS = itertools.count()


def location_binary() -> str:
    path = os.environ.get("THRIFTY_LOCATION") or str(ROOT / "target" / "debug" / "location")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no `location` binary at {path}: run `cargo build` at the repository root "
                    "or set THRIFTY_LOCATION")
    return path


def tool_binary(name: str) -> str:
    """A command-line tool built beside `location` (storeput, storeget...)."""
    path = str(Path(location_binary()).with_name(name))
    if not os.access(path, os.X_OK):
        pytest.fail(f"no `{name}` binary at {path}: run `cargo build` at the repository root")
    return path


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``condition`` every 20 ms until it holds; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Node:
    """A running `location` process; ``addr`` is its name on the ring."""

    def __init__(self, seed: Optional[str] = None, *extra: str) -> None:
        args = [location_binary(), "--bind", "127.0.0.1", *extra]
        if seed:
            args.append(seed)
        args.append("0")
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"node-{os.getpid()}-{next(_LOG_NUMBERS)}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log, env={**os.environ, "RUST_LOG": "thrifty_p2p=debug"})
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=20).decode()
        except queue.Empty:
            line = ""
        if not line.startswith("listening on") or " as " not in line:
            self.stop()
            pytest.fail(f"{args} did not start: stdout {line!r}, log:\n{self.log.read_text()}")
        self.addr = line.strip().rsplit(" as ", 1)[1]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_ring(n: int, *extra: str) -> list[Node]:
    """A seed and ``n - 1`` nodes joining it; returns once every node sees ``n`` members."""
    nodes = [Node(None, *extra)]
    for _ in range(n - 1):
        nodes.append(Node(nodes[0].addr, *extra))

    def settled() -> bool:
        try:
            return all(len(thrifty_p2p.Dict(n.addr).members()) == len(nodes) for n in nodes)
        except thrifty_p2p.StoreError:
            return False

    wait_until(settled, 20, f"{n} nodes to agree on {n} members")
    return nodes


@pytest.fixture(scope="session")
def ring() -> Iterator[list[str]]:
    """A 3-node ring for the whole session: its members' addresses."""
    nodes = start_ring(3)
    yield [n.addr for n in nodes]
    for n in nodes:
        n.stop()


@pytest.fixture
def d(ring: list[str]) -> thrifty_p2p.Dict:
    return thrifty_p2p.Dict(ring[0])


class Proxy:
    """A TCP proxy run by Python threads: calls through it make progress only
    while the GIL is free. ``on_request`` is called (in a proxy thread) with
    every piece of data going to the node."""

    def __init__(self, target: str, on_request: Callable[[bytes], None]) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.on_request = on_request
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(1 << 20):
                if requests:
                    self.on_request(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
