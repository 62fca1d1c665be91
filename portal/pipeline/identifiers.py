"""Patient identifiers read from the chosen series, for the portal to store encrypted.

They travel only in memory and in the conversion child's result file (a temporary file in
the worker's work directory). Reports, logs, errors and the inference NPZ never get them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pydicom

from .series import SeriesCandidate

#: The header elements read, as pydicom keywords.
IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")


@dataclass(frozen=True)
class PatientIdentifiers:
    """Identifier values as the DICOM header stores them; empty when an element is absent.

    `patient_name` keeps the DICOM Person Name form (`FAMILY^GIVEN^MIDDLE`); `birth_date`
    is (0010,0030) Patient's Birth Date as `YYYYMMDD`.
    """

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    accession_number: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def read_identifiers(candidate: SeriesCandidate) -> PatientIdentifiers:
    """Read (0010,0010), (0010,0020), (0010,0030) and (0008,0050) from the series' first image.

    The archive must still be open. A header that cannot be read gives empty values,
    because the identifiers are a record for the clinic, never a reason to fail a study.
    """
    member = candidate.slices[0].member
    try:
        with member.open() as handle:
            dataset = pydicom.dcmread(
                handle, stop_before_pixels=True, force=True, specific_tags=list(IDENTIFIER_KEYWORDS)
            )
    except Exception:  # noqa: BLE001 - pydicom raises many types on damaged files
        return PatientIdentifiers()
    return PatientIdentifiers(
        patient_name=_text(dataset, "PatientName"),
        patient_id=_text(dataset, "PatientID"),
        birth_date=_text(dataset, "PatientBirthDate"),
        accession_number=_text(dataset, "AccessionNumber"),
    )


def _text(dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001 - an invalid value must not hide the others
        return ""
    return str(value or "").strip()[:200]
