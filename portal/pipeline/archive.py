"""Safe reading of an uploaded ZIP: limits, rejection of unsafe entries, streamed extraction.

Members are identified by their index in the ZIP's central directory (0-based), never by
their path: clinic exports often name folders after the patient. Extracted files get
index-based names in the caller's folder, so no member path ever reaches the file system.
"""

from __future__ import annotations

import logging
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import ArchiveInvalid, ArchiveTooLarge, ArchiveUnsafe

logger = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2

_CHUNK_BYTES = 1 * MIB
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")

#: Leading bytes of archive formats that must not be nested inside the upload.
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",  # ZIP
    b"PK\x05\x06",  # empty ZIP
    b"PK\x07\x08",  # spanned ZIP
    b"\x1f\x8b",  # gzip (and .tar.gz)
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
)

#: File names that operating systems add to a ZIP next to the exported files.
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits applied to an uploaded ZIP before and while it is extracted."""

    max_members: int = 20000
    max_total_uncompressed_bytes: int = 8 * GIB
    max_member_uncompressed_bytes: int = 1 * GIB
    #: Uncompressed size divided by compressed size, checked per member once the member's
    #: uncompressed size reaches `ratio_check_min_bytes`.
    max_compression_ratio: float = 200.0
    #: Below this uncompressed size the ratio is not checked: a small blank or padded image
    #: compresses far better than 200:1 without being a threat.
    ratio_check_min_bytes: int = 1 * MIB


#: The limits used when the caller passes none (the dataclass is frozen, so sharing is safe).
DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ExtractedMember:
    """One member written to disk under an index-based name."""

    member_index: int
    path: Path
    size_bytes: int


@dataclass(frozen=True)
class SkippedMember:
    """One member left out on purpose (directory, OS junk, DICOMDIR)."""

    member_index: int
    reason: str


@dataclass
class ArchiveContents:
    """Result of `read_archive`: the extracted members and the ones skipped."""

    member_count: int
    members: list[ExtractedMember] = field(default_factory=list)
    skipped: list[SkippedMember] = field(default_factory=list)


def read_archive(
    zip_path: Path, dest_dir: Path, limits: ArchiveLimits = DEFAULT_LIMITS
) -> ArchiveContents:
    """Check the ZIP at `zip_path` and stream its members into `dest_dir`.

    Every entry is validated before anything is written. Members are then decompressed in
    chunks of 1 MiB, so memory stays bounded whatever the archive's size. Files are named
    `dest_dir/<index>` with a six-digit, zero-padded index.

    Raises
    ------
    ArchiveInvalid
        The file is not a ZIP, is truncated, has a bad CRC, or has an encrypted member.
    ArchiveUnsafe
        A member name escapes the folder, a member is a symlink, a nested archive, or
        overlaps another entry, or a member compresses suspiciously well.
    ArchiveTooLarge
        A count or size limit of `limits` is exceeded.
    """
    zip_path = Path(zip_path)
    dest_dir = Path(dest_dir)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ArchiveInvalid(reason="not_a_zip") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise ArchiveInvalid(reason="unreadable") from exc

    with archive:
        infos = archive.infolist()
        _check_entries(archive, infos, zip_path, limits)
        dest_dir.mkdir(parents=True, exist_ok=True)
        contents = ArchiveContents(member_count=len(infos))
        total_bytes = 0
        for index, info in enumerate(infos):
            skip_reason = _skip_reason(info)
            if skip_reason is not None:
                contents.skipped.append(SkippedMember(index, skip_reason))
                continue
            path = dest_dir / f"{index:06d}"
            size = _extract_member(archive, info, index, path, limits, total_bytes)
            total_bytes += size
            contents.members.append(ExtractedMember(index, path, size))

    logger.info(
        "Read archive: %d members, %d extracted, %d skipped, %d bytes",
        contents.member_count,
        len(contents.members),
        len(contents.skipped),
        total_bytes,
    )
    return contents


def _check_entries(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], zip_path: Path, limits: ArchiveLimits
) -> None:
    if len(infos) > limits.max_members:
        raise ArchiveTooLarge(limit_name="member count", value=len(infos), limit=limits.max_members)

    declared_total = 0
    for index, info in enumerate(infos):
        reason = _unsafe_name_reason(info.orig_filename)
        if reason is not None:
            raise ArchiveUnsafe(member_index=index, reason=reason)
        if _is_symlink(info):
            raise ArchiveUnsafe(member_index=index, reason="symlink")
        if info.flag_bits & 0x1:
            raise ArchiveInvalid(reason="encrypted_member", member_index=index)
        if info.file_size > limits.max_member_uncompressed_bytes:
            raise ArchiveTooLarge(
                limit_name="uncompressed member size",
                value=info.file_size,
                limit=limits.max_member_uncompressed_bytes,
            )
        if _ratio_exceeded(info.file_size, info.compress_size, limits):
            raise ArchiveUnsafe(member_index=index, reason="compression_ratio")
        declared_total += info.file_size

    if declared_total > limits.max_total_uncompressed_bytes:
        raise ArchiveTooLarge(
            limit_name="total uncompressed size",
            value=declared_total,
            limit=limits.max_total_uncompressed_bytes,
        )

    _check_overlaps(archive, infos, zip_path)


def _ratio_exceeded(uncompressed: int, compressed: int, limits: ArchiveLimits) -> bool:
    if uncompressed < limits.ratio_check_min_bytes:
        return False
    return uncompressed > limits.max_compression_ratio * max(compressed, 1)


def _unsafe_name_reason(name: str) -> str | None:
    if "\x00" in name:
        return "nul_in_name"
    if name.startswith(("/", "\\")):
        return "absolute_path"
    if _DRIVE_LETTER.match(name):
        return "drive_letter"
    parts = re.split(r"[\\/]", name)
    if any(part == ".." for part in parts):
        return "path_traversal"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def _check_overlaps(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], zip_path: Path) -> None:
    """Reject entries whose local data overlaps another entry or the central directory.

    Overlapping entries are the core of the "zip bomb by overlap" construction, where many
    central directory entries point into one compressed stream.
    """
    central_directory_offset = archive.start_dir
    spans: list[tuple[int, int, int]] = []
    with open(zip_path, "rb") as raw:
        for index, info in enumerate(infos):
            raw.seek(info.header_offset)
            header = raw.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size:
                raise ArchiveInvalid(reason="truncated", member_index=index)
            fields = _LOCAL_HEADER.unpack(header)
            if fields[0] != _LOCAL_HEADER_SIGNATURE:
                raise ArchiveInvalid(reason="missing_local_header", member_index=index)
            name_length, extra_length = fields[9], fields[10]
            data_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            data_end = data_start + info.compress_size
            if data_end > central_directory_offset:
                raise ArchiveUnsafe(member_index=index, reason="overlapping_entries")
            spans.append((info.header_offset, data_end, index))

    spans.sort()
    for (_, previous_end, _), (start, _, index) in zip(spans, spans[1:], strict=False):
        if start < previous_end:
            raise ArchiveUnsafe(member_index=index, reason="overlapping_entries")


def _skip_reason(info: zipfile.ZipInfo) -> str | None:
    if info.is_dir():
        return "directory"
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    if any(part == "__MACOSX" for part in parts):
        return "os_junk"
    basename = parts[-1] if parts else ""
    if basename.startswith("._") or basename.lower() in _JUNK_NAMES:
        return "os_junk"
    if basename.upper() == "DICOMDIR":
        # The directory record is only an index of the other files, which are read anyway.
        return "dicomdir"
    return None


def _extract_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    index: int,
    path: Path,
    limits: ArchiveLimits,
    total_before: int,
) -> int:
    written = 0
    try:
        with archive.open(info) as source, open(path, "wb") as target:
            while chunk := source.read(_CHUNK_BYTES):
                if written == 0 and chunk.startswith(_ARCHIVE_MAGIC):
                    raise ArchiveUnsafe(member_index=index, reason="nested_archive")
                written += len(chunk)
                if written > limits.max_member_uncompressed_bytes:
                    raise ArchiveTooLarge(
                        limit_name="uncompressed member size",
                        value=written,
                        limit=limits.max_member_uncompressed_bytes,
                    )
                if total_before + written > limits.max_total_uncompressed_bytes:
                    raise ArchiveTooLarge(
                        limit_name="total uncompressed size",
                        value=total_before + written,
                        limit=limits.max_total_uncompressed_bytes,
                    )
                target.write(chunk)
    except (ArchiveUnsafe, ArchiveTooLarge):
        path.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        path.unlink(missing_ok=True)
        raise ArchiveInvalid(reason="damaged_member", member_index=index) from exc
    except NotImplementedError as exc:
        path.unlink(missing_ok=True)
        raise ArchiveInvalid(reason="unsupported_compression", member_index=index) from exc
    return written
