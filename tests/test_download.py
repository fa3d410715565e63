"""Tests for casebook.download against a real HTTP server on the loopback interface.

No mocks of the network: a ThreadingHTTPServer on 127.0.0.1 serves files with Range
support and can be scripted to misbehave (drop the connection, answer 5xx, corrupt the
body, ignore Range), so the client's resume / retry / verify logic runs for real.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import stat
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from casebook.download import ChecksumError, DownloadError, copy_local, download, fetch, part_path

# Big enough that a dropped transfer has written at least one 64 KiB chunk to .part.
PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
FAST = dict(backoff=0.01, timeout=5.0, progress=False)


# --------------------------------------------------------------------------------------
# The loopback server
# --------------------------------------------------------------------------------------


@dataclass
class ServerState:
    """What the server serves and how it should behave, plus a log of what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    # Persistent behaviour per path: ok | corrupt | ignore_range | 500 | 403 ...
    modes: dict[str, str] = field(default_factory=dict)
    # One-off behaviours per path, consumed one per request before `modes` applies.
    script: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_mode(self, path: str) -> str:
        with self.lock:
            queue = self.script.get(path)
            return queue.pop(0) if queue else self.modes.get(path, "ok")

    def ranges(self, path: str) -> list[str | None]:
        """The Range headers of the requests for ``path``, in order (None: no Range)."""
        return [rng for p, rng in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    """GET with byte-range support and scriptable failures."""

    server: "LoopbackServer"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((path, rng))
        if path not in state.files:
            return self._plain(404)
        mode = state.next_mode(path)
        body = state.files[path]
        if mode.isdigit():
            return self._plain(int(mode), retry_after="0" if mode == "429" else None)
        if mode == "corrupt":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self._serve(body, rng if mode != "ignore_range" else None, drop=mode == "drop")

    def _plain(self, status: int, retry_after: str | None = None) -> None:
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bytes, rng: str | None, *, drop: bool) -> None:
        total, start = len(body), 0
        if rng:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match, f"client sent an unexpected Range header {rng!r}"
            start = int(match[1])
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop:
            # Promise the whole body, send part of it, hang up: the client must notice
            # the short read and come back with a Range request.
            self.wfile.write(chunk[: len(chunk) * 2 // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = ServerState()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}?download=1"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy configured in the environment must not intercept loopback requests.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    srv = LoopbackServer()
    srv.state.files["/data.npz"] = PAYLOAD
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------
# download()
# --------------------------------------------------------------------------------------


def test_good_download_matches_bytes_and_md5(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.npz"
    result = download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert hashlib.md5(dest.read_bytes()).hexdigest() == PAYLOAD_MD5
    assert files_in(dest.parent) == ["data.npz"]  # no .part left behind
    assert server.state.ranges("/data.npz") == [None]


def test_progress_bar_and_uppercase_md5(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5.upper(), backoff=0.01, timeout=5.0, progress=True)
    assert dest.read_bytes() == PAYLOAD


def test_existing_verified_file_is_not_downloaded_again(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    dest.write_bytes(PAYLOAD)
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert server.state.requests == []


def test_dropped_connection_resumes_with_range(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.script["/data.npz"] = ["drop"]
    dest = tmp_path / "data.npz"
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    ranges = server.state.ranges("/data.npz")
    assert ranges[0] is None
    assert len(ranges) == 2 and re.fullmatch(r"bytes=\d+-", ranges[1])
    resumed_from = int(ranges[1][6:-1])
    assert 0 < resumed_from < len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


def test_rerun_resumes_from_existing_part_file(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    part_path(dest).write_bytes(PAYLOAD[:12_345])  # left by an earlier, interrupted run
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges("/data.npz") == ["bytes=12345-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.modes["/data.npz"] = "ignore_range"
    dest = tmp_path / "data.npz"
    part_path(dest).write_bytes(b"x" * 5000)  # would be duplicated if appended to
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges("/data.npz") == ["bytes=5000-"]
    assert dest.read_bytes() == PAYLOAD


def test_drop_then_ignored_range_still_gives_the_right_file(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.script["/data.npz"] = ["drop", "ignore_range"]
    dest = tmp_path / "data.npz"
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_416_on_complete_part_file_verifies_and_finishes(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    part_path(dest).write_bytes(PAYLOAD)  # transfer finished, rename did not happen
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges("/data.npz") == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD
    assert files_in(tmp_path) == ["data.npz"]


def test_416_on_oversized_part_file_restarts(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    part_path(dest).write_bytes(PAYLOAD + b"junk")
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges("/data.npz") == [f"bytes={len(PAYLOAD) + 4}-", None]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("status", ["404", "403", "410"])
def test_client_errors_fail_at_once_naming_url_and_file(server: LoopbackServer, tmp_path: Path, status: str) -> None:
    path = "/missing.npz" if status == "404" else "/data.npz"
    if status != "404":
        server.state.modes[path] = status
    dest = tmp_path / "dl" / "wanted.npz"
    with pytest.raises(DownloadError) as info:
        download(server.url(path), dest, md5=PAYLOAD_MD5, retries=4, **FAST)
    message = str(info.value)
    assert status in message
    assert server.url(path) in message
    assert "wanted.npz" in message
    assert not isinstance(info.value, ChecksumError)
    assert files_in(dest.parent) == []
    assert len(server.state.requests) == 1  # not retried


def test_5xx_is_retried_then_succeeds(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.script["/data.npz"] = ["500", "503"]
    dest = tmp_path / "data.npz"
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, retries=4, **FAST)
    assert len(server.state.requests) == 3
    assert dest.read_bytes() == PAYLOAD


def test_429_is_retried(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.script["/data.npz"] = ["429"]
    dest = tmp_path / "data.npz"
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert len(server.state.requests) == 2
    assert dest.read_bytes() == PAYLOAD


def test_persistent_5xx_gives_up_after_retries(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.modes["/data.npz"] = "500"
    dest = tmp_path / "data.npz"
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\)") as info:
        download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, retries=2, **FAST)
    assert "500" in str(info.value) and "data.npz" in str(info.value)
    assert len(server.state.requests) == 3
    assert files_in(tmp_path) == []


def test_connection_refused_gives_up_without_dest(tmp_path: Path) -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "data.npz"
    with pytest.raises(DownloadError, match="after 2 attempt"):
        download(f"http://127.0.0.1:{port}/data.npz", dest, md5=PAYLOAD_MD5, retries=1, **FAST)
    assert files_in(tmp_path) == []


def test_checksum_mismatch_leaves_nothing_behind(server: LoopbackServer, tmp_path: Path) -> None:
    server.state.modes["/data.npz"] = "corrupt"
    corrupt_md5 = hashlib.md5(bytes([PAYLOAD[0] ^ 0xFF]) + PAYLOAD[1:]).hexdigest()
    dest = tmp_path / "dl" / "data.npz"
    with pytest.raises(ChecksumError) as info:
        download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    message = str(info.value)
    assert "data.npz" in message
    assert server.url("/data.npz") in message
    assert PAYLOAD_MD5 in message and corrupt_md5 in message
    assert files_in(dest.parent) == []  # neither dest nor .part
    assert len(server.state.requests) == 1  # a bad checksum is not retried


def test_checksum_mismatch_after_resume_discards_part(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    part_path(dest).write_bytes(b"\0" * 1000)  # stale bytes that do not belong to the file
    with pytest.raises(ChecksumError):
        download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert files_in(tmp_path) == []
    # ... so the next run starts clean and succeeds.
    download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_download_without_md5_skips_verification(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.npz"
    download(server.url("/data.npz"), dest, md5=None, **FAST)
    assert dest.read_bytes() == PAYLOAD


# --------------------------------------------------------------------------------------
# copy_local() and fetch()
# --------------------------------------------------------------------------------------


@pytest.fixture
def local_copy(tmp_path: Path) -> Path:
    src = tmp_path / "mirror" / "data.npz"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    src.chmod(0o444)  # shared storage is typically read-only
    return src


def test_copy_local_copies_verified_file(local_copy: Path, tmp_path: Path) -> None:
    dest = tmp_path / "work" / "data.npz"
    assert copy_local(local_copy, dest, md5=PAYLOAD_MD5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert dest.stat().st_mode & stat.S_IWUSR
    assert files_in(dest.parent) == ["data.npz"]


def test_copy_local_wrong_md5_leaves_nothing(local_copy: Path, tmp_path: Path) -> None:
    dest = tmp_path / "work" / "data.npz"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        copy_local(local_copy, dest, md5=wrong)
    message = str(info.value)
    assert str(local_copy) in message and wrong in message and PAYLOAD_MD5 in message
    assert files_in(dest.parent) == []


def test_copy_local_missing_source(tmp_path: Path) -> None:
    src = tmp_path / "nowhere" / "data.npz"
    with pytest.raises(DownloadError, match=re.escape(str(src))):
        copy_local(src, tmp_path / "data.npz", md5=PAYLOAD_MD5)


def test_fetch_url(server: LoopbackServer, tmp_path: Path) -> None:
    entry = {"url": server.url("/data.npz"), "md5": PAYLOAD_MD5, "filename": "data.npz"}
    dest = fetch(entry, tmp_path / "data.npz", progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_path_accepts_file_or_mirror_directory(local_copy: Path, tmp_path: Path) -> None:
    entry = {"url": "http://unused.invalid/data.npz", "md5": PAYLOAD_MD5, "filename": "data.npz"}
    a = fetch(entry, tmp_path / "a" / "data.npz", source="path", path=local_copy)
    b = fetch(entry, tmp_path / "b" / "data.npz", source="path", path=local_copy.parent)
    assert a.read_bytes() == b.read_bytes() == PAYLOAD


def test_fetch_rejects_bad_arguments(tmp_path: Path) -> None:
    entry = {"url": None, "md5": None, "filename": None}
    with pytest.raises(DownloadError, match="no url"):
        fetch(entry, tmp_path / "x")
    with pytest.raises(ValueError, match="needs a path"):
        fetch(entry, tmp_path / "x", source="path")
    with pytest.raises(ValueError, match="unknown source"):
        fetch(entry, tmp_path / "x", source="ftp")


def test_partial_files_on_another_file_system_still_land_atomically(server: LoopbackServer, tmp_path: Path) -> None:
    import os
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test folder")
    with tempfile.TemporaryDirectory(dir=shm) as partial_dir:
        dest = tmp_path / "resources" / "data.npz"
        download(server.url("/data.npz"), dest, md5=PAYLOAD_MD5, partial_dir=partial_dir, **FAST)
        assert dest.read_bytes() == PAYLOAD
        assert list(Path(partial_dir).iterdir()) == [] and files_in(dest.parent) == ["data.npz"]
