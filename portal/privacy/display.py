"""Template filters that show DICOM identifier values as people read them."""

from __future__ import annotations

from datetime import date

from flask_babel import format_date


def dicom_person_name(value: str) -> str:
    """Show a DICOM Person Name (`FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`) as "FAMILY, GIVEN MIDDLE"."""
    parts = [part.strip() for part in value.split("=")[0].split("^")]
    family = parts[0] if parts else ""
    given = " ".join(part for part in parts[1:3] if part)
    if family and given:
        return f"{family}, {given}"
    return family or given or value


def dicom_date(value: str) -> str:
    """Show a DICOM DA value (`YYYYMMDD`) in the page's locale; other text is shown as is."""
    try:
        parsed = date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return value
    if len(value) != 8:
        return value
    return format_date(parsed, "medium")
