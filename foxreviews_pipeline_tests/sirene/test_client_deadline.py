"""The INSEE client's one deadline per call holds against a server that trickles the status
line and headers themselves, one byte at a time (each before the read timeout)."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from foxreviews_pipeline.lib.sirene.client import InseeApiError, InseeClient

KEY = "deadline-key-4e2a"
DEADLINE_S = 2.0
# Each byte comes well within the read timeout: only the call's deadline can end the call.
BYTE_EVERY_S = 0.1
READ_TIMEOUT_S = 1.0


class HeaderTrickler:
    """A local HTTP/1.1 server whose answers from request `from_request` on are a status line
    and headers sent one byte at a time, and never finished; earlier requests get a small
    JSON answer on a kept-alive connection."""

    def __init__(self, from_request: int = 1):
        self.from_request = from_request
        self.connections = 0
        self.requests = 0
        self.trickled_bytes = 0
        self.clients_left = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> HeaderTrickler:
        accepter = threading.Thread(target=self._accept, daemon=True)
        accepter.start()
        self._threads.append(accepter)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            while not self._stop.is_set():
                if not self._read_request(reader):
                    return
                with self._lock:
                    self.requests += 1
                    number = self.requests
                if number < self.from_request:
                    body = json.dumps({"etatService": "UP"}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    continue
                self._trickle(conn)
                return

    def _read_request(self, reader) -> bool:
        while True:
            line = reader.readline()
            if not line:
                return False
            if line in (b"\r\n", b"\n"):
                return True

    def _trickle(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: "
        data = itertools.chain(head, itertools.repeat(ord(".")))  # a line that never ends
        try:
            while not self._stop.is_set():
                conn.sendall(bytes([next(data)]))
                with self._lock:
                    self.trickled_bytes += 1
                time.sleep(BYTE_EVERY_S)
        except OSError:
            with self._lock:
                self.clients_left += 1


@pytest.fixture
def trickler() -> Iterator[HeaderTrickler]:
    with HeaderTrickler() as server:
        yield server


def make_client(base_url: str, **kwargs) -> InseeClient:
    options = {
        "requests_per_minute": 6000,
        "timeout": (5.0, READ_TIMEOUT_S),
        "deadline_s": DEADLINE_S,
        "max_attempts": 1,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    options.update(kwargs)
    return InseeClient(base_url, KEY, **options)


def wait_for(condition, within_s: float = 10.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_trickled_headers_end_the_call_at_its_deadline(trickler):
    client = make_client(trickler.base_url)
    started = time.monotonic()
    with pytest.raises(InseeApiError) as caught:
        client.informations()
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert f"within the {DEADLINE_S:g} s deadline" in message
    assert "the status line and headers had not all come" in message
    assert not caught.value.permanent  # a transient failure, retried while budget remains
    assert elapsed < DEADLINE_S + 10
    # The status line and part of the headers did arrive, each byte within the read timeout.
    assert trickler.trickled_bytes > len(b"HTTP/1.1 200 OK\r\n")
    # The client closed the connection: the server's next byte fails.
    assert wait_for(lambda: trickler.clients_left == 1)
    assert trickler.connections == 1


def test_each_attempt_has_its_own_deadline_and_the_call_gives_up(trickler):
    client = make_client(trickler.base_url, max_attempts=3)
    started = time.monotonic()
    with pytest.raises(InseeApiError, match=r"after 3 attempts: no complete answer") as caught:
        client.informations()
    elapsed = time.monotonic() - started

    assert "2 s deadline" in str(caught.value)
    assert client.stats.api_calls == 3 and client.stats.retries == 2
    assert elapsed < 3 * DEADLINE_S + 10
    assert wait_for(lambda: trickler.clients_left == 3)


def test_a_kept_alive_connection_is_cut_at_the_deadline_too():
    # The first call is answered and its connection kept alive; the next call reuses it and
    # gets trickled headers.
    with HeaderTrickler(from_request=2) as server:
        client = make_client(server.base_url)
        assert client.informations() == {"etatService": "UP"}
        started = time.monotonic()
        with pytest.raises(InseeApiError, match=r"2 s deadline \(the status line and headers"):
            client.informations()
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE_S + 10
        assert server.connections == 1 and server.requests == 2
        assert wait_for(lambda: server.clients_left == 1)
