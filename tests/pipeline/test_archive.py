"""Safe ZIP reading: every refusal carries its error code, junk is skipped, names never leak."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from portal.pipeline import (
    ArchiveInvalid,
    ArchiveLimits,
    ArchiveTooLarge,
    ArchiveUnsafe,
    convert_study,
    read_archive,
)
from tests.pipeline.phantoms import SeriesSpec, ZipMember, build_series, series_members

DICOM_PAYLOAD = b"\0" * 128 + b"DICM" + b"\x02\x00" * 50


def _member(name: str, data: bytes = DICOM_PAYLOAD) -> ZipMember:
    return ZipMember(name, data)


def test_reads_members_in_memory_by_index(make_zip, tmp_path):
    zip_path = make_zip(
        [
            ZipMember("SILVA^MARIA/", b""),
            _member("SILVA^MARIA/IM0001.dcm"),
            _member("SILVA^MARIA/IM0002"),
            _member("SILVA^MARIA/IM0003.IMA"),
        ]
    )
    before = sorted(tmp_path.rglob("*"))

    with read_archive(zip_path) as contents:
        assert contents.member_count == 4
        assert [m.member_index for m in contents.members] == [1, 2, 3]
        assert all(m.read_bytes() == DICOM_PAYLOAD for m in contents.members)
        assert all(m.size_bytes == len(DICOM_PAYLOAD) for m in contents.members)
        assert [(s.member_index, s.reason) for s in contents.skipped] == [(0, "directory")]
        assert "SILVA" not in repr(contents.members)

    assert sorted(tmp_path.rglob("*")) == before


def test_reads_cp437_names_without_utf8_flag(make_zip):
    # Windows tools write names in the OEM code page without the UTF-8 flag (bit 11). An
    # ASCII name gets no flag from zipfile, so its bytes are patched to a cp437 "Ç" (0x80).
    zip_path = make_zip([_member("CONCEIXAO/IM1"), _member("CONCEIXAO/IM2")])
    zip_path.write_bytes(zip_path.read_bytes().replace(b"CONCEIXAO", b"CONCEI\x80AO"))

    with read_archive(zip_path) as contents:
        assert [m.member_index for m in contents.members] == [0, 1]
        assert contents.members[1].read_bytes() == DICOM_PAYLOAD


class _UnseekableSink(io.RawIOBase):
    """A write-only stream without seek, so zipfile writes a data descriptor per member."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


@pytest.mark.parametrize("streamed", [False, True], ids=["sizes-in-header", "data-descriptor"])
def test_reads_stored_and_deflated_members_exactly(make_zip, tmp_path, streamed):
    payloads = [DICOM_PAYLOAD + bytes(range(256)) * n for n in (0, 3, 400, 7)]
    if streamed:
        sink = _UnseekableSink()
        with zipfile.ZipFile(sink, "w") as archive:
            for n, payload in enumerate(payloads):
                info = zipfile.ZipInfo(f"study/IM{n}")
                info.compress_type = zipfile.ZIP_DEFLATED if n % 2 == 0 else zipfile.ZIP_STORED
                with archive.open(info, "w") as target:
                    target.write(payload)
        zip_path = tmp_path / "streamed.zip"
        zip_path.write_bytes(bytes(sink.data))
        with zipfile.ZipFile(zip_path) as archive:
            assert all(info.flag_bits & 0x08 for info in archive.infolist())
    else:
        zip_path = make_zip(
            [ZipMember(f"study/IM{n}", p, compress=n % 2 == 0) for n, p in enumerate(payloads)]
        )

    with read_archive(zip_path) as contents:
        read = [member.read_bytes() for member in contents.members]

    assert read == payloads


def test_rejects_member_name_over_255_bytes(make_zip):
    zip_path = make_zip([_member("study/IM1"), _member("study/" + "x" * 251)])

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.params == {"member_index": 1, "reason": "name_too_long"}


def test_rejects_stream_longer_than_declared_size(make_zip):
    payload = bytes(range(256)) * 40
    zip_path = make_zip([_member("study/IM1", payload)])
    raw = bytearray(zip_path.read_bytes())
    # Declare 100 bytes fewer in the local header and the central directory record.
    for signature, size_offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = raw.index(signature)
        struct.pack_into("<I", raw, start + size_offset, len(payload) - 100)
    zip_path.write_bytes(bytes(raw))

    with read_archive(zip_path) as contents, pytest.raises(ArchiveInvalid) as caught:
        contents.members[0].read_bytes()

    assert caught.value.params == {"reason": "damaged_member", "member_index": 0}


def test_skips_os_junk_and_dicomdir(make_zip, tmp_path):
    zip_path = make_zip(
        [
            _member("study/IM1"),
            _member("__MACOSX/study/._IM1", b"\0\x05\x16\x07junk"),
            _member("study/._IM1", b"\0\x05\x16\x07junk"),
            _member("study/.DS_Store", b"Bud1junk"),
            _member("study/Thumbs.db", b"thumbs"),
            _member("DICOMDIR"),
        ]
    )
    with read_archive(zip_path) as contents:
        kept = [m.member_index for m in contents.members]
        skipped = [(s.member_index, s.reason) for s in contents.skipped]

    assert kept == [0]
    assert skipped == [
        (1, "os_junk"),
        (2, "os_junk"),
        (3, "os_junk"),
        (4, "os_junk"),
        (5, "dicomdir"),
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.dcm", "path_traversal"),
        ("study/../../evil.dcm", "path_traversal"),
        ("study\\..\\evil.dcm", "path_traversal"),
        ("/etc/evil.dcm", "absolute_path"),
        ("C:/evil.dcm", "drive_letter"),
        ("c:evil.dcm", "drive_letter"),
    ],
)
def test_rejects_unsafe_member_name(make_zip, tmp_path, name, reason):
    zip_path = make_zip([_member("study/IM1"), _member(name)])

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.code == "archive_unsafe"
    assert caught.value.params == {"member_index": 1, "reason": reason}


def test_rejects_nul_in_member_name(make_zip, tmp_path):
    # zipfile cuts names at NUL when writing, so the byte is patched in afterwards.
    zip_path = make_zip([_member("study/IM1"), _member("study/IMXNUL.dcm")])
    raw = zip_path.read_bytes().replace(b"IMXNUL", b"IM\0NUL")
    zip_path.write_bytes(raw)

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.params == {"member_index": 1, "reason": "nul_in_name"}


def test_rejects_symlink_member(make_zip, tmp_path):
    link = zipfile.ZipInfo("study/link.dcm", date_time=(2020, 1, 1, 0, 0, 0))
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = make_zip([_member("study/IM1"), ZipMember("", b"/etc/passwd", info=link)])

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.code == "archive_unsafe"
    assert caught.value.params == {"member_index": 1, "reason": "symlink"}


def test_rejects_encrypted_member(make_zip, tmp_path):
    # zipfile cannot encrypt and clears the flag when writing, so the flag bit is patched in
    # the second member's local header and central directory record. Readers act on the flag.
    zip_path = make_zip([_member("study/IM1"), _member("study/IM2")])
    raw = bytearray(zip_path.read_bytes())
    second_local = raw.index(b"PK\x03\x04", 4)
    second_record = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    raw[second_local + 6] |= 0x1
    raw[second_record + 8] |= 0x1
    zip_path.write_bytes(bytes(raw))

    with pytest.raises(ArchiveInvalid) as caught:
        read_archive(zip_path)

    assert caught.value.code == "archive_invalid"
    assert caught.value.params == {"reason": "encrypted_member", "member_index": 1}


def test_rejects_nested_zip(make_zip, tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("IM1.dcm", DICOM_PAYLOAD)
    zip_path = make_zip([_member("study/IM1"), _member("study/more_images", inner.getvalue())])

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.params == {"member_index": 1, "reason": "nested_archive"}


def test_rejects_overlapping_entries(make_zip, tmp_path):
    zip_path = make_zip([_member("study/IM1"), _member("study/IM2")])
    raw = bytearray(zip_path.read_bytes())
    # Point the second central directory record at the first member's local header.
    second_record = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    struct.pack_into("<I", raw, second_record + 42, 0)
    zip_path.write_bytes(bytes(raw))

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.params == {"member_index": 1, "reason": "overlapping_entries"}


def test_rejects_too_many_members(make_zip, tmp_path):
    zip_path = make_zip([_member(f"study/IM{i}") for i in range(6)])

    with pytest.raises(ArchiveTooLarge) as caught:
        read_archive(zip_path, ArchiveLimits(max_members=5))

    assert caught.value.code == "archive_too_large"
    assert caught.value.params == {"limit_name": "member count", "value": 6, "limit": 5}


def test_rejects_member_over_size_limit(make_zip, tmp_path):
    zip_path = make_zip([_member("study/IM1", b"\1" * 5000)])

    with pytest.raises(ArchiveTooLarge) as caught:
        read_archive(zip_path, ArchiveLimits(max_member_uncompressed_bytes=4096))

    assert caught.value.params["limit_name"] == "uncompressed member size"


def test_rejects_total_over_size_limit(make_zip, tmp_path):
    zip_path = make_zip([_member(f"study/IM{i}", bytes(range(256)) * 8) for i in range(3)])
    limits = ArchiveLimits(max_total_uncompressed_bytes=5000)

    with pytest.raises(ArchiveTooLarge) as caught:
        read_archive(zip_path, limits)

    assert caught.value.params["limit_name"] == "total uncompressed size"


def test_rejects_compression_ratio_over_limit(make_zip, tmp_path):
    zip_path = make_zip([_member("study/IM1"), _member("study/IM2", b"\0" * (2 * 1024**2))])

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert caught.value.params == {"member_index": 1, "reason": "compression_ratio"}


def test_small_blank_member_passes_ratio_check(make_zip, tmp_path):
    # A 512 x 512 blank slice compresses far past 200:1; below 1 MiB that is not a threat.
    zip_path = make_zip([_member("study/IM1", b"\0" * 512 * 512 * 2)])

    with read_archive(zip_path) as contents:
        assert len(contents.members) == 1


def test_rejects_truncated_zip(make_zip, tmp_path):
    zip_path = make_zip([_member(f"study/IM{i}", bytes(range(256)) * 40) for i in range(4)])
    zip_path.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size // 2])

    with pytest.raises(ArchiveInvalid) as caught:
        read_archive(zip_path)

    assert caught.value.code == "archive_invalid"


def test_rejects_non_zip_named_zip(tmp_path):
    zip_path = tmp_path / "study.zip"
    zip_path.write_text("This is a PDF export, not a ZIP.\n" * 20)

    with pytest.raises(ArchiveInvalid) as caught:
        read_archive(zip_path)

    assert caught.value.params == {"reason": "not_a_zip"}


def test_rejects_damaged_member_data(make_zip, tmp_path):
    payload = bytes(range(256)) * 40
    zip_path = make_zip([_member("study/IM1", payload)])
    raw = bytearray(zip_path.read_bytes())
    data_start = 30 + len("study/IM1")
    raw[data_start + 10 : data_start + 20] = b"\xff" * 10
    zip_path.write_bytes(bytes(raw))

    with read_archive(zip_path) as contents, pytest.raises(ArchiveInvalid) as caught:
        contents.members[0].read_bytes()

    assert caught.value.params == {"reason": "damaged_member", "member_index": 0}


def test_convert_rejects_traversal_before_writing(make_zip, work_dir):
    members = series_members(build_series(SeriesSpec(slice_count=3)))
    members.append(_member("../../outside.dcm"))
    zip_path = make_zip(members)

    with pytest.raises(ArchiveUnsafe):
        convert_study(zip_path, work_dir)

    assert not (work_dir.parent / "outside.dcm").exists()
    assert sorted(p.name for p in work_dir.iterdir()) == []


def test_limits_are_frozen_with_documented_defaults():
    limits = ArchiveLimits()

    assert limits.max_members == 20000
    assert limits.max_total_uncompressed_bytes == 8 * 1024**3
    assert limits.max_member_uncompressed_bytes == 1024**3
    assert limits.max_compression_ratio == 200
    with pytest.raises(AttributeError):
        limits.max_members = 1  # type: ignore[misc]


def test_error_messages_name_no_member_path(make_zip, tmp_path: Path):
    zip_path = make_zip([_member("SILVA^MARIA/IM1"), _member("SILVA^MARIA/../../x")])

    with pytest.raises(ArchiveUnsafe) as caught:
        read_archive(zip_path)

    assert "SILVA" not in str(caught.value)
    assert "SILVA" not in repr(caught.value.params)
