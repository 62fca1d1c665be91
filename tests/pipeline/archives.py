"""Open archives in tests and close them when the test ends (see the conftest fixture)."""

from __future__ import annotations

from pathlib import Path

from portal.pipeline import ArchiveContents, ArchiveLimits, read_archive

_OPENED: list[ArchiveContents] = []


def open_archive(zip_path: Path, limits: ArchiveLimits | None = None) -> ArchiveContents:
    """Read an archive that stays open, so its members can be decoded, until the test ends."""
    contents = read_archive(zip_path, limits or ArchiveLimits())
    _OPENED.append(contents)
    return contents


def close_opened_archives() -> None:
    """Close every archive `open_archive` opened."""
    while _OPENED:
        _OPENED.pop().close()
