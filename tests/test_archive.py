"""Tests for casebook.archive on real tar and zip files built in tmp_path (no mocks).

Every refusal is checked the same way: ArchiveError naming the archive and the member,
neither ``dest`` nor ``dest.partial`` left behind, and the file the hostile member aimed at
(always a path inside tmp_path) not created.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from casebook.archive import ArchiveError, archive_root, extract_archive

NII = random.Random(1).randbytes(3000)  # stands in for a .nii.gz: incompressible bytes
LABEL = random.Random(2).randbytes(2000)
JSON = b'{"name": "Hippocampus", "numTraining": 1}\n'
TAR_SUFFIXES = {"": ".tar", "gz": ".tar.gz", "bz2": ".tar.bz2", "xz": ".tar.xz"}


# --------------------------------------------------------------------------------------
# Building archives
# --------------------------------------------------------------------------------------


def tfile(name: str, data: bytes = b"data", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)  # TarInfo keeps absolute and ".." names, unlike TarFile.add
    info.size, info.mode = len(data), mode
    return info, data


def tdir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def tlink(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def tspecial(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def write_tar(path: Path, members: list, compression: str = "") -> Path:
    with tarfile.open(path, f"w:{compression}") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def write_zip(path: Path, members: list, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """``members``: (name or ZipInfo, bytes); a name ending in "/" is a directory."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def zlink(name: str, mode: int = 0o120777) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


MSD = [
    tdir("Task04_Hippocampus"),
    tfile("Task04_Hippocampus/dataset.json", JSON),
    tfile("Task04_Hippocampus/imagesTr/hippocampus_001.nii.gz", NII),
    tfile("Task04_Hippocampus/labelsTr/hippocampus_001.nii.gz", LABEL),
    tfile("Task04_Hippocampus/imagesTs/hippocampus_002.nii.gz", NII[::-1]),
]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    # one level down, so "../x" from dest lands in tmp_path/"out", which we can inspect
    return tmp_path / "out" / "data"


def partial(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def assert_refused(archive: Path, dest: Path, *fragments: str) -> ArchiveError:
    with pytest.raises(ArchiveError) as caught:
        extract_archive(archive, dest, progress=False)
    message = str(caught.value)
    assert str(archive) in message
    reason = message.replace(str(archive), "")  # tmp_path holds the test's name: look past it
    for fragment in fragments:
        assert fragment in reason
    assert not dest.exists() and not dest.is_symlink()
    assert not partial(dest).exists()
    return caught.value


# --------------------------------------------------------------------------------------
# Normal extraction
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression,suffix", [*TAR_SUFFIXES.items(), ("gz", ".tgz")])
def test_tar_extracts_members_with_their_bytes(tmp_path: Path, dest: Path, compression: str, suffix: str) -> None:
    archive = write_tar(tmp_path / f"Task04_Hippocampus{suffix}", MSD, compression)
    assert extract_archive(archive, dest, progress=False) == dest
    task = dest / "Task04_Hippocampus"
    assert (task / "dataset.json").read_bytes() == JSON
    assert (task / "imagesTr/hippocampus_001.nii.gz").read_bytes() == NII
    assert (task / "labelsTr/hippocampus_001.nii.gz").read_bytes() == LABEL
    assert (task / "imagesTs/hippocampus_002.nii.gz").read_bytes() == NII[::-1]
    assert not partial(dest).exists()


def test_zip_extracts_members_with_their_bytes(tmp_path: Path, dest: Path) -> None:
    members = [
        ("LIDC/", b""),
        ("LIDC/series1/1.dcm", NII),
        ("LIDC/series1/2.dcm", LABEL),
        ("LIDC/series2/1.dcm", JSON),  # parent folder has no entry of its own
    ]
    archive = write_zip(tmp_path / "lidc.zip", members)
    extract_archive(archive, dest, progress=False)
    assert (dest / "LIDC/series1/1.dcm").read_bytes() == NII
    assert (dest / "LIDC/series1/2.dcm").read_bytes() == LABEL
    assert (dest / "LIDC/series2/1.dcm").read_bytes() == JSON
    assert not partial(dest).exists()


def test_tar_links_inside_dest_are_kept(tmp_path: Path, dest: Path) -> None:
    archive = write_tar(
        tmp_path / "links.tar",
        [
            *MSD,
            tlink("Task04_Hippocampus/latest.nii.gz", "imagesTr/hippocampus_001.nii.gz"),
            tlink("Task04_Hippocampus/train", "imagesTr"),
            tlink("Task04_Hippocampus/sub/up", ".."),  # climbs back to Task04_Hippocampus: inside
            tlink("Task04_Hippocampus/copy.json", "Task04_Hippocampus/dataset.json", tarfile.LNKTYPE),
        ],
    )
    extract_archive(archive, dest, progress=False)
    task = dest / "Task04_Hippocampus"
    assert os.readlink(task / "latest.nii.gz") == "imagesTr/hippocampus_001.nii.gz"
    assert (task / "latest.nii.gz").read_bytes() == NII
    assert (task / "train/hippocampus_001.nii.gz").read_bytes() == NII
    assert (task / "sub/up/dataset.json").read_bytes() == JSON
    assert (task / "copy.json").read_bytes() == JSON
    assert (task / "copy.json").stat().st_ino == (task / "dataset.json").stat().st_ino


def test_modes_are_made_safe_and_ownership_is_ours(tmp_path: Path, dest: Path) -> None:
    suid, readonly = tfile("d/suid", mode=0o6755), tfile("d/readonly", mode=0o444)
    script = tfile("d/run.sh", mode=0o775)
    suid[0].uid = suid[0].gid = 0
    suid[0].uname = suid[0].gname = "root"
    members = [tdir("d", mode=0o555), suid, readonly, script, tdir("d/locked", 0o000)]
    archive = write_tar(tmp_path / "modes.tar", members)
    extract_archive(archive, dest, progress=False)
    mode = lambda p: stat.S_IMODE((dest / p).stat().st_mode)  # noqa: E731
    assert mode("d/suid") == 0o755  # setuid/setgid dropped
    assert mode("d/readonly") == 0o644  # owner-writable
    assert mode("d/run.sh") == 0o755  # group write dropped, exec kept
    assert mode("d") == 0o755 and mode("d/locked") == 0o700
    assert (dest / "d/suid").stat().st_uid == os.getuid()


# --------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------


def _tar_refusals(tmp_path: Path) -> dict[str, tuple[list, str, Path]]:
    """id -> (members, member named in the error, the path an unsafe extractor would write)."""
    abs_target = tmp_path / "abs_escape.txt"
    up = tmp_path / "out" / "escape.txt"
    return {
        "absolute": ([tfile(str(abs_target))], str(abs_target), abs_target),
        "dotdot": ([tfile("ok.txt"), tfile("../escape.txt")], "../escape.txt", up),
        "dotdot-inner": ([tfile("a/../../escape.txt")], "a/../../escape.txt", up),
        "backslash-dotdot": ([tfile("a\\..\\..\\escape.txt")], "a\\..\\..\\escape.txt", up),
        "drive-letter": ([tfile("C:/escape.txt")], "C:/escape.txt", up),
        "symlink-out": ([tlink("evil", "../escape.txt")], "evil", up),
        "symlink-absolute": ([tlink("evil", str(abs_target))], "evil", abs_target),
        "symlink-dir-then-write": ([tlink("evil", ".."), tfile("evil/escape.txt")], "evil", up),
        # each link looks inside on its own; followed together they leave dest
        "symlink-chain": ([tlink("a", "."), tlink("b", "a/.."), tfile("b/escape.txt")], "b", up),
        "write-through-inside-link": ([tdir("sub"), tlink("link", "sub"), tfile("link/x")], "link/x", up),
        "hardlink-out": ([tlink("evil", "../escape.txt", tarfile.LNKTYPE)], "evil", up),
        "hardlink-absolute": ([tlink("evil", str(abs_target), tarfile.LNKTYPE)], "evil", abs_target),
        "hardlink-to-later": ([tlink("early", "later", tarfile.LNKTYPE), tfile("later")], "early", up),
        "char-device": ([tfile("ok.txt"), tspecial("dev/null", tarfile.CHRTYPE)], "dev/null", up),
        "block-device": ([tspecial("sda", tarfile.BLKTYPE)], "sda", up),
        "fifo": ([tspecial("pipe", tarfile.FIFOTYPE)], "pipe", up),
        "duplicate": ([tfile("a.txt"), tfile("a.txt")], "a.txt", up),
        "below-file": ([tfile("a"), tfile("a/b")], "a/b", up),
    }


TAR_REFUSALS = list(_tar_refusals(Path("/x")))


@pytest.mark.parametrize("case", TAR_REFUSALS)
def test_unsafe_tar_is_refused_and_nothing_is_written(tmp_path: Path, dest: Path, case: str) -> None:
    members, member, escape = _tar_refusals(tmp_path)[case]
    archive = write_tar(tmp_path / "evil.tar.gz", members, "gz")
    assert_refused(archive, dest, repr(member))
    assert not escape.exists() and not escape.is_symlink()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def _zip_refusals(tmp_path: Path) -> dict[str, tuple[str | zipfile.ZipInfo, bytes]]:
    """id -> (name or ZipInfo, data); unsafe ones aim at tmp_path/"abs_escape.txt" or tmp_path/"out"/"escape.txt"."""
    return {
        "absolute": (str(tmp_path / "abs_escape.txt"), b"x"),
        "leading-backslash": ("\\escape.txt", b"x"),
        "drive-letter": ("C:\\escape.txt", b"x"),
        "dotdot": ("../escape.txt", b"x"),
        "dotdot-inner": ("a/../../escape.txt", b"x"),
        "backslash-dotdot": ("a\\..\\..\\escape.txt", b"x"),
        "symlink": (zlink("evil"), b"../escape.txt"),
        "symlink-inside": (zlink("fine"), b"dataset.json"),  # zip links are refused wherever they point
        "fifo": (zlink("pipe", 0o010644), b""),
        "char-device": (zlink("null", 0o020644), b""),
    }


ZIP_REFUSALS = list(_zip_refusals(Path("/x")))


@pytest.mark.parametrize("case", ZIP_REFUSALS)
def test_unsafe_zip_is_refused_and_nothing_is_written(tmp_path: Path, dest: Path, case: str) -> None:
    name, data = _zip_refusals(tmp_path)[case]
    archive = write_zip(tmp_path / "evil.zip", [("dataset.json", JSON), (name, data)])
    member = name.filename if isinstance(name, zipfile.ZipInfo) else name
    assert_refused(archive, dest, repr(member))
    for escape in (tmp_path / "abs_escape.txt", tmp_path / "out" / "escape.txt"):
        assert not escape.exists() and not escape.is_symlink()


def test_encrypted_zip_member_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = write_zip(tmp_path / "secret.zip", [("secret.dcm", b"x")], zipfile.ZIP_STORED)
    # zipfile cannot write encrypted members; set the "encrypted" flag in both headers
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"PK\x03\x04") + 6] |= 1
    raw[raw.index(b"PK\x01\x02") + 8] |= 1
    archive.write_bytes(bytes(raw))
    assert_refused(archive, dest, "'secret.dcm'", "encrypted")


def test_refusal_removes_existing_dest_and_stale_partial(tmp_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    partial(dest).mkdir()
    archive = write_tar(tmp_path / "evil.tar", [tfile("../escape.txt")])
    assert_refused(archive, dest, "'../escape.txt'")


# --------------------------------------------------------------------------------------
# Damaged archives
# --------------------------------------------------------------------------------------


def _big_msd() -> list:
    # incompressible members, so cutting the compressed file in half cuts member data
    rng = random.Random(3)
    return [tfile(f"Task04/imagesTr/case_{i:03d}.nii.gz", rng.randbytes(20_000)) for i in range(10)]


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_truncated_compressed_tar_is_an_archive_error(tmp_path: Path, dest: Path, compression: str) -> None:
    archive = write_tar(tmp_path / f"cut{TAR_SUFFIXES[compression]}", _big_msd(), compression)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    assert_refused(archive, dest, "truncated")


def test_truncated_plain_tar_is_an_archive_error(tmp_path: Path, dest: Path) -> None:
    archive = write_tar(tmp_path / "cut.tar", _big_msd())
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    assert_refused(archive, dest, "truncated")


def test_plain_tar_cut_at_a_member_boundary_is_an_archive_error(tmp_path: Path, dest: Path) -> None:
    # tarfile itself reads this as a valid archive of three members; the missing end marker gives it away
    archive = write_tar(tmp_path / "cut.tar", _big_msd())
    with tarfile.open(archive) as tar:
        boundary = tar.getmembers()[3].offset
    archive.write_bytes(archive.read_bytes()[:boundary])
    assert_refused(archive, dest, "end-of-archive")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupted_zip_member_is_an_archive_error(tmp_path: Path, dest: Path, compression: int) -> None:
    payload = b"DICM" + b"".join(b"slice %05d of a CT series\n" % i for i in range(2000))
    archive = write_zip(tmp_path / "ct.zip", [("ct/1.dcm", JSON), ("ct/2.dcm", payload)], compression)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("ct/2.dcm")
    raw = bytearray(archive.read_bytes())
    local = info.header_offset
    # the local header is 30 bytes plus the name and extra field, whose lengths it stores at 26 and 28
    name_len = int.from_bytes(raw[local + 26 : local + 28], "little")
    extra_len = int.from_bytes(raw[local + 28 : local + 30], "little")
    middle = local + 30 + name_len + extra_len + info.compress_size // 2
    for i in range(middle, middle + 8):
        raw[i] ^= 0xFF
    archive.write_bytes(bytes(raw))
    assert_refused(archive, dest, "'ct/2.dcm'", "corrupt")  # the first member was written, then removed


def test_truncated_zip_is_an_archive_error(tmp_path: Path, dest: Path) -> None:
    members = [(f"s/{i}.dcm", random.Random(i).randbytes(10_000)) for i in range(10)]
    archive = write_zip(tmp_path / "series.zip", members)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])  # the central directory at the end is gone
    assert_refused(archive, dest, "zip data", "truncated")


def test_non_archive_is_a_clear_archive_error(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "notes.tar.gz"
    archive.write_bytes(b"this is not an archive\n" * 100)
    assert_refused(archive, dest, "not a tar or zip archive")
    gzipped_image = tmp_path / "image.nii.gz"  # compressed, but no tar inside
    gzipped_image.write_bytes(gzip.compress(NII))
    assert_refused(gzipped_image, dest, "gzip-compressed data that cannot be read as an archive")


def test_empty_archive_is_an_archive_error(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "zeros.tar"
    archive.write_bytes(bytes(10240))  # a failed download that left only zeros reads as an empty tar
    assert_refused(archive, dest, "no members")


def test_missing_archive_is_file_not_found(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(FileNotFoundError):
        extract_archive(tmp_path / "absent.tar", dest, progress=False)
    assert not dest.exists() and not partial(dest).exists()


def test_archive_inside_dest_is_refused_before_anything_is_deleted(tmp_path: Path) -> None:
    dest = tmp_path / "data"
    dest.mkdir()
    archive = write_tar(dest / "Task04.tar", MSD)
    with pytest.raises(ValueError, match="inside"):
        extract_archive(archive, dest, progress=False)
    assert archive.is_file()


# --------------------------------------------------------------------------------------
# Atomic replacement, junk, detection, archive_root
# --------------------------------------------------------------------------------------


def test_stale_partial_is_replaced(tmp_path: Path, dest: Path) -> None:
    partial(dest).mkdir(parents=True)
    (partial(dest) / "stale.txt").write_text("left by a crash")
    extract_archive(write_tar(tmp_path / "t.tar", MSD), dest, progress=False)
    assert not (dest / "stale.txt").exists()
    assert (dest / "Task04_Hippocampus/dataset.json").read_bytes() == JSON
    assert not partial(dest).exists()


def test_existing_dest_is_replaced(tmp_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("previous extraction")
    extract_archive(write_tar(tmp_path / "t.tar", MSD), dest, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["Task04_Hippocampus"]


def test_appledouble_junk_is_skipped(tmp_path: Path, dest: Path) -> None:
    junk = [
        tfile("._Task04_Hippocampus", b"\x00\x05\x16\x07"),
        tfile("Task04_Hippocampus/imagesTr/._hippocampus_001.nii.gz", b"\x00\x05\x16\x07"),
        tfile("Task04_Hippocampus/.DS_Store", b"Bud1"),
        tfile("__MACOSX/Task04_Hippocampus/._dataset.json", b"\x00\x05\x16\x07"),
        tspecial("__MACOSX/odd", tarfile.FIFOTYPE),  # skipped, so never judged as a FIFO
    ]
    extract_archive(write_tar(tmp_path / "mac.tar", MSD + junk), dest, progress=False)
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == sorted(info.name for info, data in MSD if data is not None)
    assert archive_root(dest) == dest / "Task04_Hippocampus"


def test_zip_macosx_folder_is_skipped(tmp_path: Path, dest: Path) -> None:
    members = [("x/1.dcm", NII), ("__MACOSX/", b""), ("__MACOSX/x/._1.dcm", b"\x00\x05"), ("x/._1.dcm", b"\x00")]
    extract_archive(write_zip(tmp_path / "mac.zip", members), dest, progress=False)
    assert sorted(p.name for p in dest.rglob("*")) == ["1.dcm", "x"]


def test_archive_root(tmp_path: Path) -> None:
    single = tmp_path / "single"
    (single / "Task04_Hippocampus").mkdir(parents=True)
    (single / "._Task04_Hippocampus").write_bytes(b"")
    assert archive_root(single) == single / "Task04_Hippocampus"
    two = tmp_path / "two"
    (two / "a").mkdir(parents=True)
    (two / "b").mkdir()
    assert archive_root(two) == two
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "dataset.json").write_bytes(JSON)
    assert archive_root(flat) == flat


def test_format_is_detected_by_content_not_name(tmp_path: Path, dest: Path) -> None:
    tgz = write_tar(tmp_path / "download", MSD, "gz")  # no extension, as saved from a URL
    extract_archive(tgz, dest, progress=False)
    assert (dest / "Task04_Hippocampus/dataset.json").read_bytes() == JSON
    zip_named_tar = write_zip(tmp_path / "series.tar", [("s/1.dcm", NII)])
    extract_archive(zip_named_tar, dest, progress=False)
    assert (dest / "s/1.dcm").read_bytes() == NII


def test_progress_bar_does_not_break_extraction(tmp_path: Path, dest: Path) -> None:
    extract_archive(write_tar(tmp_path / "t.tar", MSD), dest, progress=True)
    assert (dest / "Task04_Hippocampus/imagesTr/hippocampus_001.nii.gz").read_bytes() == NII


def test_archive_too_big_for_the_disk_is_refused_before_writing(tmp_path: Path) -> None:
    # a header that promises 1 TB (a decompression bomb, or a disk far too small)
    info = tarfile.TarInfo("Task99_Huge/imagesTr/big.nii.gz")
    info.size = 10**12
    archive = tmp_path / "huge.tar"
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    with open(archive, "wb") as fh:  # a sparse file: the terabyte of data takes no disk
        fh.write(header)
        fh.truncate(len(header) + info.size)
        fh.seek(0, 2)
        fh.write(b"\0" * 1024)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=r"huge.tar: extracting needs 931.32 GiB but .* GiB free"):
        extract_archive(archive, dest, progress=False)
    assert not dest.exists() and not (tmp_path / "out.partial").exists()
