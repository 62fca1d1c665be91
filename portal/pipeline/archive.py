"""Safe reading of an uploaded ZIP in memory: limits, rejection of unsafe entries.

Members are identified by their index in the ZIP's central directory (0-based), never by
their path: clinic exports often name folders after the patient. Nothing is extracted to
disk. `read_archive` checks every entry and returns the members that may hold DICOM;
a member is inflated into memory only when it is read, one at a time, so memory stays
bounded by the largest member (itself bounded by `ArchiveLimits`).
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
from typing import IO

from .errors import ArchiveInvalid, ArchiveTooLarge, ArchiveUnsafe

try:
    from isal import isal_zlib as _inflate_backend
except ImportError:  # pragma: no cover - isal is a pinned dependency
    _inflate_backend = zlib

logger = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_MAX_NAME_BYTES = 255

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
_MAGIC_BYTES = max(len(magic) for magic in _ARCHIVE_MAGIC)

#: File names that operating systems add to a ZIP next to the exported files.
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits applied to an uploaded ZIP before and while it is inflated."""

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
class ArchiveMember:
    """One member that may hold a DICOM file, read from the open archive on request."""

    member_index: int
    size_bytes: int
    archive: ArchiveContents | None = field(default=None, repr=False, compare=False)

    @property
    def max_decoded_bytes(self) -> int:
        """Return the maximum decoded pixel data size in bytes (the member size limit)."""
        return self._contents().limits.max_member_uncompressed_bytes

    def open(self) -> IO[bytes]:
        """Open the member as a seekable stream that inflates on demand."""
        return self._contents().open_member(self)

    def read_bytes(self) -> bytes:
        """Inflate the whole member into memory."""
        return self._contents().read_member(self)

    def _contents(self) -> ArchiveContents:
        if self.archive is None:
            raise RuntimeError(f"member {self.member_index} is not attached to an archive")
        return self.archive


@dataclass(frozen=True)
class SkippedMember:
    """One member left out on purpose (directory, OS junk, DICOMDIR)."""

    member_index: int
    reason: str


class ArchiveContents:
    """The checked members of an open ZIP; use it as a context manager to close the file."""

    def __init__(
        self,
        archive: zipfile.ZipFile,
        infos: list[zipfile.ZipInfo],
        limits: ArchiveLimits,
        data_offsets: list[int] | None = None,
    ) -> None:
        self._archive = archive
        self.limits = limits
        self._infos = infos
        #: Offset in the ZIP file of each member's compressed data, by member index.
        self._data_offsets = data_offsets
        self._raw: IO[bytes] | None = None
        self.member_count = len(infos)
        self.members: list[ArchiveMember] = []
        self.skipped: list[SkippedMember] = []

    def __enter__(self) -> ArchiveContents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the ZIP file; members can no longer be read afterwards."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self._archive.close()

    def open_member(self, member: ArchiveMember) -> IO[bytes]:
        """Open a member as a stream; damaged data raises `ArchiveInvalid` when read."""
        try:
            return self._archive.open(self._infos[member.member_index])
        except NotImplementedError as exc:
            raise ArchiveInvalid(
                reason="unsupported_compression", member_index=member.member_index
            ) from exc
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise ArchiveInvalid(reason="damaged_member", member_index=member.member_index) from exc

    def read_member(self, member: ArchiveMember) -> bytes:
        """Inflate a member into memory, checking its size and CRC.

        Inflating stops at the declared size, so a stream longer than its declared size
        cannot use more memory than declared: it fails the size or CRC check instead.
        Deflated members are inflated by ISA-L (half of zlib's CPU time on the 512 x 512 CT
        slices of `bench/pipeline.py`), the others through zipfile.
        """
        info = self._infos[member.member_index]
        if info.compress_type == zipfile.ZIP_DEFLATED and self._data_offsets is not None:
            return self._inflate(member.member_index, info)
        try:
            with self.open_member(member) as source:
                data = source.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ArchiveInvalid(reason="damaged_member", member_index=member.member_index) from exc
        if len(data) != info.file_size:
            raise ArchiveInvalid(reason="damaged_member", member_index=member.member_index)
        return data

    def _inflate(self, index: int, info: zipfile.ZipInfo) -> bytes:
        if self._raw is None:
            self._raw = open(self._archive.filename, "rb")  # noqa: SIM115 - closed by close()
        self._raw.seek(self._data_offsets[index])
        compressed = self._raw.read(info.compress_size)
        try:
            inflater = _inflate_backend.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(compressed, info.file_size + 1)
        except (zlib.error, _inflate_backend.error) as exc:
            raise ArchiveInvalid(reason="damaged_member", member_index=index) from exc
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise ArchiveInvalid(reason="damaged_member", member_index=index)
        return data

    def _read_prefix(self, index: int, size: int) -> bytes:
        try:
            with self._archive.open(self._infos[index]) as source:
                return source.read(size)
        except NotImplementedError as exc:
            raise ArchiveInvalid(reason="unsupported_compression", member_index=index) from exc
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ArchiveInvalid(reason="damaged_member", member_index=index) from exc


def read_archive(zip_path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> ArchiveContents:
    """Open and check the ZIP at `zip_path`; return its members without inflating them.

    Every entry of the central directory is validated first. Then the first bytes of each
    member are inflated to reject nested archives. The caller closes the result (it is a
    context manager); the result is closed already when an error is raised.

    Raises
    ------
    ArchiveInvalid
        The file is not a ZIP, is truncated, or has an encrypted member.
    ArchiveUnsafe
        A member name escapes the folder or is unusual, a member is a symlink, a nested
        archive, or overlaps another entry, or a member compresses suspiciously well.
    ArchiveTooLarge
        A count or size limit of `limits` is exceeded.
    """
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ArchiveInvalid(reason="not_a_zip") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise ArchiveInvalid(reason="unreadable") from exc

    try:
        infos = archive.infolist()
        data_offsets = _check_entries(archive, infos, zip_path, limits)
        contents = ArchiveContents(archive, infos, limits, data_offsets)
        for index, info in enumerate(infos):
            skip_reason = _skip_reason(info)
            if skip_reason is not None:
                contents.skipped.append(SkippedMember(index, skip_reason))
                continue
            if info.file_size and contents._read_prefix(index, _MAGIC_BYTES).startswith(
                _ARCHIVE_MAGIC
            ):
                raise ArchiveUnsafe(member_index=index, reason="nested_archive")
            contents.members.append(
                ArchiveMember(
                    member_index=index,
                    size_bytes=info.file_size,
                    archive=contents,
                )
            )
    except BaseException:
        archive.close()
        raise

    logger.info(
        "Read archive: %d members, %d to parse, %d skipped",
        contents.member_count,
        len(contents.members),
        len(contents.skipped),
    )
    return contents


def _check_entries(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], zip_path: Path, limits: ArchiveLimits
) -> list[int]:
    """Check every entry's name, kind, sizes and placement; return their data offsets."""
    if len(infos) > limits.max_members:
        raise ArchiveTooLarge(limit_name="member count", value=len(infos), limit=limits.max_members)

    declared_total = 0
    for index, info in enumerate(infos):
        reason = _unsafe_name_reason(info)
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

    return _check_overlaps(archive, infos, zip_path)


def _ratio_exceeded(uncompressed: int, compressed: int, limits: ArchiveLimits) -> bool:
    if uncompressed < limits.ratio_check_min_bytes:
        return False
    return uncompressed > limits.max_compression_ratio * max(compressed, 1)


def _unsafe_name_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.orig_filename
    if "\x00" in name:
        return "nul_in_name"
    if len(_raw_name(info)) > _MAX_NAME_BYTES:
        return "name_too_long"
    if name.startswith(("/", "\\")):
        return "absolute_path"
    if _DRIVE_LETTER.match(name):
        return "drive_letter"
    parts = re.split(r"[\\/]", name)
    if any(part == ".." for part in parts):
        return "path_traversal"
    return None


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """Return the member name as stored: UTF-8 when flagged, else cp437 (as zipfile decodes)."""
    if info.flag_bits & 0x800:
        return info.orig_filename.encode("utf-8")
    try:
        return info.orig_filename.encode("cp437")
    except UnicodeEncodeError:
        return info.orig_filename.encode("utf-8")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def _check_overlaps(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], zip_path: Path
) -> list[int]:
    """Reject entries whose local data overlaps another entry or the central directory.

    Returns the offset of each entry's compressed data in the file, by member index.

    Overlapping entries are the core of the "zip bomb by overlap" construction, where many
    central directory entries point into one compressed stream.
    """
    central_directory_offset = archive.start_dir
    spans: list[tuple[int, int, int]] = []
    data_offsets: list[int] = []
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
            data_offsets.append(data_start)

    spans.sort()
    for (_, previous_end, _), (start, _, index) in zip(spans, spans[1:], strict=False):
        if start < previous_end:
            raise ArchiveUnsafe(member_index=index, reason="overlapping_entries")
    return data_offsets


def _basename(info: zipfile.ZipInfo) -> tuple[tuple[str, ...], str]:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    return parts, (parts[-1] if parts else "")


def _skip_reason(info: zipfile.ZipInfo) -> str | None:
    if info.is_dir():
        return "directory"
    parts, basename = _basename(info)
    if any(part == "__MACOSX" for part in parts):
        return "os_junk"
    if basename.startswith("._") or basename.lower() in _JUNK_NAMES:
        return "os_junk"
    if basename.upper() == "DICOMDIR":
        # The directory record only indexes the other files, which are all read anyway, so
        # a missing, misplaced or outdated DICOMDIR changes nothing.
        return "dicomdir"
    return None
