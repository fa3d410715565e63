"""Fetch the public data sets named in the registry: over HTTP, or from a local copy.

Every fetch ends in one of two states: ``dest`` holds a file whose md5 matched the
registry, or ``dest`` does not exist. A download streams into ``<dest>.part`` and is
renamed into place only after it has been verified, so Snakemake (or a person) never
sees a half-written or corrupt data set under its final name.

Interrupted transfers resume from the ``.part`` file with an HTTP ``Range`` request,
both within one call (on retry) and across calls (a rerun after a crash or Ctrl-C);
that matters for the 224-pixel MedMNIST files, which are hundreds of megabytes.
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import requests
from tqdm.auto import tqdm

from casebook.fileio import atomic_path, file_digest

__all__ = ["DownloadError", "ChecksumError", "download", "copy_local", "fetch", "part_path"]

_CHUNK = 1 << 16
# Status codes worth another try: the server (or a proxy in front of it) is having a
# bad moment. 408 and 429 are 4xx codes but mean "try again later"; Zenodo answers 429
# when it rate-limits, and failing a whole pipeline run on that would be wrong.
_RETRY_STATUS = frozenset({408, 429})
# Never sleep longer than this between attempts, whatever Retry-After asks for.
_MAX_SLEEP = 120.0


class DownloadError(RuntimeError):
    """A data set file could not be fetched (bad URL, server refusal, missing local copy)."""


class ChecksumError(DownloadError):
    """A fetched file's md5 differs from the registry's; the file has been removed."""


class _TransientError(Exception):
    """A failure that another attempt may fix: 5xx, 429, a dropped or short transfer."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def part_path(dest: str | os.PathLike, partial_dir: str | os.PathLike | None = None) -> Path:
    """The partial-download file of ``dest`` while it is being fetched: next to it, or in
    ``partial_dir`` (the pipeline keeps partial files out of ``resources/``, so that a
    failed download leaves nothing there, yet a rerun can still resume)."""
    dest = Path(dest)
    folder = Path(partial_dir) if partial_dir is not None else dest.parent
    return folder / (dest.name + ".part")


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    partial_dir: str | os.PathLike | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming and retrying, and verify its md5.

    Args:
        url: HTTP(S) address of the file.
        dest: final path; its directory is created if needed.
        md5: expected hex md5 of the whole file; ``None`` skips verification.
        retries: further attempts after the first one, on connection errors,
            timeouts, dropped transfers, 5xx, 408 and 429.
        backoff: sleep ``backoff * 2**n`` seconds before retry ``n`` (0-based).
        timeout: seconds to wait for the connection and for each read.
        progress: show a tqdm progress bar.
        partial_dir: where the ``.part`` file lives during the transfer (default: beside
            ``dest``); on the same file system as ``dest``, so the final rename is atomic.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        DownloadError: a 4xx answer (at once, no retry), or every attempt failed.
            A ``<dest>.part`` file may be left so that a rerun resumes.
        ChecksumError: the transfer completed but its md5 is wrong; neither ``dest``
            nor the ``.part`` file is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if md5 is not None and _already_verified(dest, md5):
        return dest
    part = part_path(dest, partial_dir)
    part.parent.mkdir(parents=True, exist_ok=True)
    _transfer_with_retries(url, dest, part, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    if md5 is not None:
        _verify_or_discard(part, md5, name=dest, origin=url)
    _move_into_place(part, dest)
    return dest


def _move_into_place(part: Path, dest: Path) -> None:
    """Rename ``part`` to ``dest``; across file systems (``resources/`` on cluster scratch,
    partial files in the checkout), copy beside ``dest`` first, so the last step is still
    an atomic rename."""
    try:
        os.replace(part, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with atomic_path(dest) as tmp:
            shutil.copyfile(part, tmp)
        part.unlink()


def _already_verified(dest: Path, md5: str) -> bool:
    """True when ``dest`` exists and already has the expected md5 (a no-op rerun)."""
    return dest.is_file() and file_digest(dest, "md5") == md5.lower()


def _transfer_with_retries(url: str, dest: Path, part: Path, *, retries: int, backoff: float, timeout: float, progress: bool) -> None:
    """Call :func:`_transfer` until it completes, sleeping between transient failures."""
    attempts = max(1, retries + 1)
    for attempt in range(attempts):
        try:
            _transfer(url, dest, part, timeout=timeout, progress=progress)
            return
        except (_TransientError, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            if attempt + 1 == attempts:
                raise DownloadError(
                    f"could not download {url} to {dest} after {attempts} attempt(s): {exc}"
                    + (f" (partial data kept in {part}; rerun to resume)" if part.exists() else "")
                ) from exc
            time.sleep(_retry_delay(attempt, backoff, getattr(exc, "retry_after", None)))


def _retry_delay(attempt: int, backoff: float, retry_after: float | None) -> float:
    """Exponential backoff, stretched to honour a server's Retry-After, and capped."""
    delay = backoff * (2**attempt)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, _MAX_SLEEP)


def _transfer(url: str, dest: Path, part: Path, *, timeout: float, progress: bool) -> None:
    """One attempt: request the missing bytes of ``part`` and append them to it.

    Returns normally once ``part`` holds the whole file as far as the server's headers
    tell; raises :class:`_TransientError` (or a requests error) when another attempt
    may help, and :class:`DownloadError` when it will not.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity: a gzip-encoded answer would make byte offsets and Content-Length refer to
    # the compressed stream, which breaks resuming.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:
            _check_range_not_satisfiable(response, part, offset)
            return
        _raise_for_status(response, url, dest)
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                # The server answered a range we did not ask for; start again from zero.
                part.unlink(missing_ok=True)
                raise _TransientError(f"server returned bytes from {start}, expected {offset}")
            mode = "ab"
        else:
            # 200 to a Range request: the server ignores Range, so what is already in
            # the .part file would be duplicated; restart from zero.
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        _stream_to(response, part, mode=mode, offset=offset, total=total, label=dest.name, progress=progress)
    if total is not None and part.stat().st_size < total:
        raise _TransientError(f"transfer ended at {part.stat().st_size} of {total} bytes")


def _raise_for_status(response: requests.Response, url: str, dest: Path) -> None:
    """Classify a non-success answer: retry later, or give up now."""
    status = response.status_code
    if status in (200, 206):
        return
    reason = f"HTTP {status} {response.reason or ''}".strip()
    if status >= 500 or status in _RETRY_STATUS:
        raise _TransientError(f"{reason} from {url}", _parse_retry_after(response.headers.get("Retry-After")))
    # 4xx (and odd 1xx/3xx that requests did not follow): the URL or the access is wrong,
    # and asking again will not change that.
    raise DownloadError(f"{reason} for {url} (downloading {dest}); check the URL in the data set registry")


def _check_range_not_satisfiable(response: requests.Response, part: Path, offset: int) -> None:
    """Handle 416: the ``.part`` file is already as long as the file, or longer.

    A 416 for ``bytes=<size>-`` means the transfer is complete, so the caller goes on
    to verification. If the server says how long the file is and the ``.part`` file is
    longer, it cannot be the file: throw it away and start again.
    """
    total = response.headers.get("Content-Range", "").rpartition("/")[2]
    if total.isdigit() and int(total) != offset:
        part.unlink(missing_ok=True)
        raise _TransientError(f"partial file has {offset} bytes but the file has {total}; restarting")


def _parse_content_range(value: str) -> tuple[int, int | None]:
    """``bytes 100-199/200`` -> ``(100, 200)``; the total is ``None`` when given as ``*``."""
    try:
        unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.partition("-")[0])
        if unit != "bytes":
            raise ValueError(unit)
    except ValueError:
        raise _TransientError(f"unparseable Content-Range {value!r}") from None
    return start, int(total) if total.isdigit() else None


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _stream_to(response: requests.Response, part: Path, *, mode: str, offset: int, total: int | None, label: str, progress: bool) -> None:
    """Write the response body to ``part`` in chunks, with a progress bar."""
    with (
        open(part, mode) as fh,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        for chunk in response.iter_content(chunk_size=_CHUNK):
            fh.write(chunk)
            bar.update(len(chunk))


def _verify_or_discard(path: Path, md5: str, *, name: Path, origin: str) -> None:
    """Raise :class:`ChecksumError` (after deleting ``path``) unless its md5 matches."""
    actual = file_digest(path, "md5")
    if actual != md5.lower():
        # A complete file with the wrong checksum is not worth resuming: a rerun must
        # fetch it afresh, so leave nothing behind.
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {name} downloaded from {origin}: expected md5 {md5.lower()}, "
            f"got {actual}; the file was deleted. The file on the server may have changed, or "
            f"the registry's md5 is wrong; check it against the publisher's."
        )


# --------------------------------------------------------------------------------------
# Local copies (mirrors, shared cluster storage, air-gapped machines)
# --------------------------------------------------------------------------------------


def copy_local(src: str | os.PathLike, dest: str | os.PathLike, *, md5: str | None) -> Path:
    """Copy a local file to ``dest`` atomically, verifying its md5 on the way.

    The md5 is computed over the bytes as they are copied, so the file is read once and
    what is checked is what was written. On a mismatch nothing is left at ``dest``.

    Raises:
        DownloadError: ``src`` does not exist or is not a file.
        ChecksumError: the md5 of ``src`` differs from ``md5``.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise DownloadError(f"local source {src} does not exist or is not a file (wanted for {dest})")
    with atomic_path(dest) as tmp:
        actual = _copy_and_hash(src, tmp)
        if md5 is not None and actual != md5.lower():
            # Raising inside atomic_path removes the temporary, so dest never appears.
            raise ChecksumError(
                f"checksum mismatch for {src}: expected md5 {md5.lower()}, got {actual}; "
                f"not copied to {dest}. A local copy may be a modified or older version of "
                f"the published file; fetch it again from the registry's url."
            )
    return dest


def _copy_and_hash(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` and return the md5 of the bytes copied."""
    digest = hashlib.md5()
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            digest.update(chunk)
            fout.write(chunk)
    shutil.copymode(src, dest)
    # The shared copy is often read-only; the working copy need not be.
    os.chmod(dest, os.stat(dest).st_mode | 0o200)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Dispatch on a registry entry
# --------------------------------------------------------------------------------------


def fetch(
    entry: Mapping[str, Any],
    dest: str | os.PathLike,
    *,
    source: str = "url",
    path: str | os.PathLike | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Fetch one registry file entry (as returned by ``registry.resolve``) to ``dest``.

    Args:
        entry: mapping with ``url``, ``md5`` and ``filename``.
        dest: final path of the file.
        source: ``"url"`` downloads ``entry["url"]``; ``"path"`` copies a local file.
        path: for ``source="path"``: the local file, or a directory (a mirror) that
            holds ``entry["filename"]``.
        progress: show a progress bar while downloading.
        options: passed to :func:`download` (retries, backoff, timeout, partial_dir).
    """
    md5 = entry.get("md5")
    if source == "url":
        url = entry.get("url")
        if not url:
            raise DownloadError(f"registry entry for {dest} has no url to download (is it an embedded data set?)")
        return download(url, dest, md5=md5, progress=progress, **options)
    if source == "path":
        if path is None:
            raise ValueError("source 'path' needs a path (a file or a directory holding it)")
        return copy_local(_local_file(Path(path), entry), dest, md5=md5)
    raise ValueError(f"unknown source {source!r}; expected 'url' or 'path'")


def _local_file(path: Path, entry: Mapping[str, Any]) -> Path:
    """A directory stands for a mirror of the registry's file names."""
    if path.is_dir() and entry.get("filename"):
        return path / entry["filename"]
    return path
