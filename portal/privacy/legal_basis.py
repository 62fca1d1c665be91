"""The legal bases an upload may declare for processing health data (LGPD art. 11 II)."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l

from portal.studies.models import DEFAULT_LEGAL_BASIS


@dataclass(frozen=True)
class LegalBasis:
    """One legal basis: a stable code, the article it rests on and the purpose it serves."""

    code: str
    article: str
    title: object
    purpose: object


#: Every basis the upload form and the API accept, the default first.
LEGAL_BASES: dict[str, LegalBasis] = {
    basis.code: basis
    for basis in (
        LegalBasis(
            DEFAULT_LEGAL_BASIS,
            "LGPD art. 11 II f",
            _l("Health protection by health professionals"),
            _l(
                "Health protection, exclusively, in a procedure carried out by health "
                "professionals or health services: segmentation to support the diagnosis."
            ),
        ),
        LegalBasis(
            "consent",
            "LGPD art. 11 I",
            _l("Specific consent of the patient"),
            _l("Processing for the purposes the patient consented to in writing, specifically."),
        ),
        LegalBasis(
            "legal_obligation",
            "LGPD art. 11 II a",
            _l("Legal or regulatory obligation"),
            _l("Compliance with a legal or regulatory obligation of the clinic."),
        ),
        LegalBasis(
            "research",
            "LGPD art. 11 II c",
            _l("Research by a research body"),
            _l("Studies by a research body, with the patient data anonymized wherever possible."),
        ),
        LegalBasis(
            "rights_exercise",
            "LGPD art. 11 II d",
            _l("Exercise of rights in proceedings"),
            _l("Regular exercise of rights, including in a contract or in judicial proceedings."),
        ),
    )
}


def legal_basis(code: str) -> LegalBasis:
    """Return the basis with `code`; raise KeyError for an unknown code."""
    return LEGAL_BASES[code]
