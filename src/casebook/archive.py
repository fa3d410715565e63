"""Safe, atomic extraction of the tar and zip archives that public medical data sets ship in.

Public data sets arrive as archives: the Medical Segmentation Decathlon as tarballs
(``Task04_Hippocampus.tar`` holds ``Task04_Hippocampus/imagesTr/*.nii.gz``, ``labelsTr/``,
``imagesTs/`` and ``dataset.json``), DICOM collections as zips of folders. An archive is
input we did not write, so ``tarfile.extractall``/``zipfile.extractall`` are not used:

* A member may be named ``/etc/x`` or ``../../x``, or be a link pointing outside the
  destination that a later member writes through. Every member is checked *before anything
  is written*, and the checks are ours, so they behave the same on every Python 3.11 patch
  release (the ``filter=`` argument of ``tarfile`` only exists from 3.11.4 on).
* Device files and FIFOs have no place in a data set; setuid bits and foreign owners
  neither. Files are written by this module, owned by the caller, and owner-writable (so
  the pipeline can delete them again).
* A half-extracted data set looks like a complete one to Snakemake. Extraction goes into
  ``<dest>.partial`` and is renamed to ``dest`` only once every member has been written, so
  ``dest`` either holds the whole archive or does not exist. A truncated download
  (tarfile.ReadError, EOFError, zlib.error, a bad zip CRC...) surfaces as
  :class:`ArchiveError` naming the archive.
* Archives made on macOS carry AppleDouble files (``._hippocampus_001.nii.gz``, ``__MACOSX/``)
  that are not NIfTI or DICOM but match the same glob patterns and break readers; they are
  skipped.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from tqdm.auto import tqdm

__all__ = ["ArchiveError", "extract_archive", "archive_root"]

_CHUNK = 1 << 20
# Everything a damaged or truncated archive can raise while it is being read. OSError covers
# gzip.BadGzipFile and bz2's "Invalid data stream"; NotImplementedError is zipfile's answer to
# a compression method it lacks (Deflate64, which Windows Explorer writes for large zips).
# Only reads are wrapped in these, so a full disk while writing still reads as an OSError.
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    OSError,
)
# A Windows drive prefix ("C:"); such names are absolute (or drive-relative) on Windows.
_DRIVE = re.compile(r"[A-Za-z]:")
# Symlinks followed while resolving one target before it counts as a loop (Linux's limit).
_MAX_HOPS = 40
# Dropped from every mode: setuid/setgid/sticky, and write access for group and others.
_DROP_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH
# The first bytes of the formats tarfile and zipfile read, to explain a file they both reject.
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"PK\x03\x04": "zip",
}
# Finder's and the Archive Utility's metadata, never data.
_JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store"})


class ArchiveError(ValueError):
    """An archive is unsafe to extract or cannot be read; the message names the archive file
    and, where one is to blame, the offending member."""


@dataclass(frozen=True)
class _Member:
    """One archive entry in the terms both formats share.

    ``kind`` is "file", "dir", "symlink", "hardlink", or a description of a special file;
    ``parts``/``link_parts`` are filled in once the member has passed the checks.
    """

    name: str
    kind: str
    mode: int
    link: str = ""
    source: Any = None  # the TarInfo or ZipInfo to read the data from
    size: int = 0  # bytes once extracted (regular files)
    parts: tuple[str, ...] = ()
    link_parts: tuple[str, ...] = ()


class _Reader(NamedTuple):
    """An open archive: its members, how to read one, and a last integrity check."""

    members: list[_Member]
    open_member: Callable[[_Member], IO[bytes]]
    verify_end: Callable[[], None]
    allow_links: bool


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = True) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip archive into ``dest``, safely and atomically.

    The format is detected from the content, not the file name. Every member is checked
    before anything is written; the archive is refused if any member has an absolute name
    (also ``\\`` or a drive letter), a ``..`` component, is a device file, FIFO or other
    special file, is a symlink or hard link that resolves outside ``dest`` (or any link in a
    zip), is written through a link or below a file, or appears twice. Links inside
    ``dest`` are kept for tar archives. AppleDouble junk (``._*`` files, ``__MACOSX/``,
    ``.DS_Store``) is skipped rather than extracted: the MSD tarballs contain ``._*`` files
    next to the images which are not NIfTI and break readers globbing ``*.nii.gz``.

    Files are owned by the caller, lose setuid/setgid/sticky and group/other write bits, and
    are owner-writable. Modification times are not restored: the extracted tree must look
    newer than the archive it came from, or Snakemake would rerun the rule every time.

    Members are written into ``<dest>.partial`` (a stale one from a crash is removed first),
    which replaces ``dest`` only on success. On any failure, neither ``dest`` nor
    ``<dest>.partial`` is left behind.

    Args:
        archive: the archive file.
        dest: the directory to create (replaced if it exists).
        progress: show a tqdm progress bar over the members.

    Returns:
        ``dest`` as a Path.

    Raises:
        ArchiveError: the file is not a tar or zip archive, a member is unsafe, or the
            archive is corrupt or truncated.
        FileNotFoundError: ``archive`` does not exist.
        ValueError: ``archive`` lies inside ``dest`` or ``<dest>.partial`` (extraction
            would delete it).
    """
    archive, dest = Path(archive), Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    _refuse_overlap(archive, dest, partial)
    try:
        with _open_archive(archive) as reader:
            members = _check_members(archive, reader.members, allow_links=reader.allow_links)
            _remove(partial)
            _check_space(archive, members, partial.parent)
            partial.mkdir(parents=True)
            _write_members(archive, members, reader.open_member, partial, progress=progress)
            reader.verify_end()
        # dest is the rule's output: an older extraction is replaced, not merged into
        _remove(dest)
        os.rename(partial, dest)
    except BaseException:
        # whatever went wrong (refusal, corrupt data, Ctrl-C), leave no half-made data set
        _remove(partial)
        _remove(dest)
        raise
    return dest


def _check_space(archive: Path, members: Sequence[_Member], folder: Path) -> None:
    """Refuse before writing when the extracted files would not fit on the disk: a full
    disk half-way through a 70 GB Decathlon task (or a decompression bomb) helps no one."""
    needed = sum(m.size for m in members if m.kind == "file")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ArchiveError(f"{archive}: extracting needs {needed / 2**30:.2f} GiB but {existing} has {free / 2**30:.2f} GiB free")


def archive_root(dest: str | os.PathLike) -> Path:
    """The folder that holds an extracted data set.

    MSD tarballs (and most zips) wrap everything in one top-level folder
    (``Task04_Hippocampus/``); callers want that folder, not the directory it was
    extracted into.

    Args:
        dest: a directory, typically the result of :func:`extract_archive`.

    Returns:
        The only top-level entry of ``dest`` if it is a directory (AppleDouble junk
        ignored), otherwise ``dest`` itself.
    """
    dest = Path(dest)
    entries = [p for p in dest.iterdir() if not _is_junk((p.name,))]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


# --------------------------------------------------------------------------------------
# Reading archives
# --------------------------------------------------------------------------------------


@contextmanager
def _reading(archive: Path, member: str | None = None) -> Iterator[None]:
    """Turn the many ways a damaged archive fails while being read into one ArchiveError."""
    try:
        yield
    except _READ_ERRORS as exc:
        reason = f"corrupt, truncated or unreadable archive ({type(exc).__name__}: {exc})"
        raise ArchiveError(_where(archive, member, reason)) from exc


@contextmanager
def _open_archive(archive: Path) -> Iterator[_Reader]:
    """Open ``archive`` as tar or zip, by content, and list its members.

    Raises:
        FileNotFoundError: ``archive`` is not a file.
        ArchiveError: it is neither a tar nor a zip, or its member list cannot be read.
    """
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: no such archive file")
    with ExitStack() as stack:
        with _reading(archive):
            # tar first: is_tarfile validates a header checksum at the start of the file,
            # while is_zipfile only looks for a directory record near the end, which a tar
            # whose last member is a zip also has.
            if tarfile.is_tarfile(archive):
                tar = stack.enter_context(tarfile.open(archive, "r:*"))
                reader = _Reader(
                    members=[_tar_member(info) for info in tar.getmembers()],
                    open_member=lambda m: tar.extractfile(m.source),
                    verify_end=lambda: _check_tar_end(archive, tar),
                    allow_links=True,
                )
            elif zipfile.is_zipfile(archive):
                zf = stack.enter_context(zipfile.ZipFile(archive))
                reader = _Reader(
                    members=[_zip_member(archive, info) for info in zf.infolist()],
                    open_member=lambda m: zf.open(m.source),
                    verify_end=lambda: None,  # every member's CRC is checked as it is read
                    allow_links=False,
                )
            else:
                raise ArchiveError(f"{archive}: {_not_an_archive(archive)}")
        if not reader.members:
            raise ArchiveError(f"{archive}: archive has no members")
        yield reader


def _not_an_archive(archive: Path) -> str:
    """Why neither tarfile nor zipfile accepts the file, as precisely as its first bytes tell.

    A download cut short is the usual cause, and "not an archive" would send the reader
    looking in the wrong place: a truncated bz2 tar cannot even yield its first header, and
    a truncated zip has lost the directory at its end.
    """
    with open(archive, "rb") as fh:
        head = fh.read(6)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return f"{kind} data that cannot be read as an archive (truncated or corrupt?)"
    return "not a tar or zip archive (the format is detected from the content, not the name)"


def _tar_member(info: tarfile.TarInfo) -> _Member:
    """A tar member in the shared terms."""
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    elif info.ischr():
        kind = "character device"
    elif info.isblk():
        kind = "block device"
    elif info.isfifo():
        kind = "FIFO"
    else:
        kind = f"special file (tar type {info.type!r})"
    return _Member(name=info.name, kind=kind, mode=info.mode, link=info.linkname, source=info, size=info.size)


def _zip_member(archive: Path, info: zipfile.ZipInfo) -> _Member:
    """A zip member in the shared terms; its file type comes from the Unix mode bits.

    Raises:
        ArchiveError: the member is encrypted (no data set is, and it cannot be read).
    """
    if info.flag_bits & 0x1:
        raise ArchiveError(_where(archive, info.filename, "member is encrypted"))
    unix_mode = info.external_attr >> 16
    file_type = stat.S_IFMT(unix_mode)
    if info.is_dir() or file_type == stat.S_IFDIR:
        kind = "dir"
    elif file_type in (0, stat.S_IFREG):  # 0: written by a tool that records no Unix mode
        kind = "file"
    elif file_type == stat.S_IFLNK:
        kind = "symlink"
    elif file_type == stat.S_IFCHR:
        kind = "character device"
    elif file_type == stat.S_IFBLK:
        kind = "block device"
    elif file_type == stat.S_IFIFO:
        kind = "FIFO"
    else:
        kind = f"special file (mode {unix_mode:o})"
    mode = unix_mode & 0o7777 or (0o755 if kind == "dir" else 0o644)
    return _Member(name=info.filename, kind=kind, mode=mode, source=info, size=info.file_size)


def _check_tar_end(archive: Path, tar: tarfile.TarFile) -> None:
    """Insist on the zero block that ends every tar archive.

    tarfile stops quietly at a missing or damaged header after the first one, so a plain
    ``.tar`` cut at a member boundary reads as a shorter, valid archive. Called after the
    members were written: the seek is then forwards, not a second decompression pass.
    """
    with _reading(archive):
        tar.fileobj.seek(tar.offset)
        end = tar.fileobj.read(tarfile.BLOCKSIZE)
    if end != tarfile.NUL * tarfile.BLOCKSIZE:
        raise ArchiveError(f"{archive}: truncated or corrupt archive (no end-of-archive marker at byte {tar.offset})")


# --------------------------------------------------------------------------------------
# Checking members
# --------------------------------------------------------------------------------------


def _check_members(archive: Path, members: Sequence[_Member], *, allow_links: bool) -> list[_Member]:
    """Check every member; return those to extract, in archive order, with their paths.

    Raises:
        ArchiveError: a member is unsafe (see :func:`extract_archive`), naming it.
    """
    kinds: dict[tuple[str, ...], str] = {}  # path -> kind of the members seen so far
    checked: list[_Member] = []
    for member in members:
        parts = _safe_parts(archive, member.name, member.name)
        if _is_junk(parts):
            continue  # never written, so its type and link target do not matter
        if not parts:
            if member.kind == "dir":
                continue  # "./": the destination itself
            raise ArchiveError(_where(archive, member.name, "empty path"))
        if member.kind not in ("file", "dir", "symlink", "hardlink"):
            reason = f"{member.kind}: only files, directories and links are extracted"
            raise ArchiveError(_where(archive, member.name, reason))
        if member.kind in ("symlink", "hardlink") and not allow_links:
            raise ArchiveError(_where(archive, member.name, "symlink: links are not extracted from zip archives"))
        previous = kinds.get(parts)
        if previous is not None and not previous == member.kind == "dir":
            # a second copy could replace a file by a link (or the reverse) after the checks
            raise ArchiveError(_where(archive, member.name, "path appears more than once in the archive"))
        link_parts: tuple[str, ...] = ()
        if member.kind == "hardlink":
            link_parts = _safe_parts(archive, member.name, member.link, "hard link target")
            # the target must already be on disk when the link is made, and a regular file
            if kinds.get(link_parts) != "file":
                reason = f"hard link target {member.link!r} is not a file earlier in the archive"
                raise ArchiveError(_where(archive, member.name, reason))
        kinds[parts] = member.kind
        checked.append(replace(member, parts=parts, link_parts=link_parts))

    links = {m.parts: m.link for m in checked if m.kind == "symlink"}
    for member in checked:
        # Nothing is written through a link or below a file, so every write lands in a real
        # directory made by us; that is what makes resolving links on paper below exact.
        for i in range(1, len(member.parts)):
            above = kinds.get(member.parts[:i], "dir")
            if above != "dir":
                reason = f"lies below {'/'.join(member.parts[:i])!r}, which is a {above}"
                raise ArchiveError(_where(archive, member.name, reason))
        if member.kind == "symlink":
            _check_symlink(archive, member, links)
    return checked


def _safe_parts(archive: Path, member: str, path: str, what: str = "path") -> tuple[str, ...]:
    """The components of a relative ``path`` with ``.`` and empty ones dropped.

    Raises:
        ArchiveError: ``path`` is absolute (``/``, ``\\`` or a drive letter), has a ``..``
            component (split on either slash, for archives made on Windows) or a NUL byte.
    """
    if "\x00" in path:
        raise ArchiveError(_where(archive, member, f"NUL byte in {what} {path!r}"))
    if path.startswith(("/", "\\")) or _DRIVE.match(path):
        raise ArchiveError(_where(archive, member, f"absolute {what} {path!r}"))
    if ".." in re.split(r"[/\\]", path):
        raise ArchiveError(_where(archive, member, f"'..' in {what} {path!r}"))
    return tuple(p for p in path.split("/") if p not in ("", "."))


def _check_symlink(archive: Path, member: _Member, links: Mapping[tuple[str, ...], str]) -> None:
    """Refuse a symlink whose target is absolute or resolves outside the destination.

    Raises:
        ArchiveError: naming the member and its target.
    """
    target = member.link
    if not target or target.startswith(("/", "\\")) or _DRIVE.match(target):
        # even an absolute target inside dest would point at the wrong place once dest moves
        raise ArchiveError(_where(archive, member.name, f"symlink to absolute or empty target {target!r}"))
    if _resolve(member.parts[:-1] + tuple(target.split("/")), links) is None:
        reason = f"symlink target {target!r} resolves outside the destination (or loops)"
        raise ArchiveError(_where(archive, member.name, reason))


def _resolve(path: Sequence[str], links: Mapping[tuple[str, ...], str]) -> tuple[str, ...] | None:
    """Where ``path`` (components under dest) ends up, following the archive's own symlinks.

    Resolution is on paper, over the archive's members, because nothing is written yet.
    Returns None if the path climbs above dest at any step or does not settle after
    ``_MAX_HOPS`` links.
    """
    done: list[str] = []
    todo = list(reversed(path))  # a stack: the next component is last
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        done.append(part)
        target = links.get(tuple(done))
        if target is not None:
            hops += 1
            if hops > _MAX_HOPS or target.startswith(("/", "\\")):
                return None
            done.pop()  # the link is replaced by its target, relative to the link's folder
            todo.extend(reversed(target.split("/")))
    return tuple(done)


def _is_junk(parts: Sequence[str]) -> bool:
    """AppleDouble and Finder metadata: ``._*`` files, ``__MACOSX/`` trees, ``.DS_Store``."""
    return bool(parts) and (parts[-1].startswith("._") or any(p in _JUNK_NAMES for p in parts))


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _write_members(
    archive: Path,
    members: Sequence[_Member],
    open_member: Callable[[_Member], IO[bytes]],
    root: Path,
    *,
    progress: bool,
) -> None:
    """Write checked members under ``root`` (an empty directory of ours), in archive order."""
    for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
        target = root.joinpath(*member.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.kind == "dir":
            target.mkdir(exist_ok=True)
            os.chmod(target, _dir_mode(member.mode))
        elif member.kind == "file":
            _copy_member(archive, member, open_member, target)
            os.chmod(target, _file_mode(member.mode))
        elif member.kind == "symlink":
            os.symlink(member.link, target)
        else:  # hardlink, to a file written earlier (checked)
            os.link(root.joinpath(*member.link_parts), target)


def _copy_member(archive: Path, member: _Member, open_member: Callable[[_Member], IO[bytes]], target: Path) -> None:
    """Stream one member's data into a new file; read errors become ArchiveError, write errors stay OSError."""
    with _reading(archive, member.name):
        src = open_member(member)
    # "x": never open an existing path, so nothing can be written through a planted link
    with src, open(target, "xb") as out:
        while True:
            with _reading(archive, member.name):
                chunk = src.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)


def _file_mode(mode: int) -> int:
    """Archive mode bits made safe: no setuid/setgid/sticky or group/other write; owner rw."""
    return (mode & 0o7777 & ~_DROP_BITS) | stat.S_IRUSR | stat.S_IWUSR


def _dir_mode(mode: int) -> int:
    """As :func:`_file_mode`, with owner rwx so the tree can be filled and deleted again."""
    return (mode & 0o7777 & ~_DROP_BITS) | stat.S_IRWXU


def _remove(path: Path) -> None:
    """Delete ``path`` whatever it is (tree, file, link); nothing to do if it is absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _refuse_overlap(archive: Path, dest: Path, partial: Path) -> None:
    """Refuse to extract an archive into a directory that extraction deletes.

    Raises:
        ValueError: ``archive`` lies inside ``dest`` or ``partial``.
    """
    where = archive.resolve()
    for directory in (dest, partial):
        if where.is_relative_to(directory.resolve()):
            raise ValueError(f"{archive} lies inside {directory}, which extraction deletes and replaces")


def _where(archive: Path, member: str | None, reason: str) -> str:
    """An error message naming the archive and, if given, the member."""
    if member is None:
        return f"{archive}: {reason}"
    return f"{archive}: member {member!r}: {reason}"
