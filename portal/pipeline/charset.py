"""Check (0008,0005) Specific Character Set against the text values it applies to.

Geometry and pixels never depend on text, so a file with an unknown or wrong character
set is still read. Its text is then decoded as ISO 8859-1 (Latin-1), which accepts every
byte: the usual mistake is a Latin-1 export labelled `ISO_IR 192` (UTF-8), and decoding
it as Latin-1 keeps accented names equal to those of correctly labelled files, so one
patient is not counted twice.
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

CHARSET_TAG = 0x00080005
FALLBACK_CHARACTER_SET = "ISO_IR 100"

#: Value representations whose bytes are decoded with the Specific Character Set.
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_ESCAPE = 0x1B
#: Common misspellings of the defined terms ("ISO-IR 100", "ISO 2022-IR 6") that pydicom
#: reads as the standard term.
_SINGLE_BYTE_SPELLING = re.compile(r"^ISO[^_]IR")
_CODE_EXTENSION_SPELLING = re.compile(r"^(?=ISO.2022.IR.)(?!ISO 2022 IR )")


def check_character_set(dataset: Dataset) -> str | None:
    """Return "unknown" or "mismatch" when the declared character set cannot decode the text.

    "unknown": a term of (0008,0005) is not a DICOM defined term. "mismatch": a text value
    of the top-level data set is not valid in the declared encoding. In both cases the
    in-memory data set is switched to ISO 8859-1 so that later reads of its text decode
    without errors. Returns None when the text decodes as declared. Values with ISO 2022
    escape sequences are not checked.
    """
    terms = _declared_terms(dataset)
    if not terms:
        return None
    problem = None
    if any(_python_encoding(term) is None for term in terms):
        problem = "unknown"
    elif not _text_decodes(dataset, _python_encoding(terms[0]) or "iso8859"):
        problem = "mismatch"
    if problem is not None:
        # pydicom decodes raw values with the character set it read, so both change.
        is_implicit_vr, is_little_endian = dataset.original_encoding
        dataset.set_original_encoding(is_implicit_vr, is_little_endian, FALLBACK_CHARACTER_SET)
        dataset.SpecificCharacterSet = FALLBACK_CHARACTER_SET
    return problem


def _declared_terms(dataset: Dataset) -> list[str]:
    element = dataset.get_item(CHARSET_TAG)
    if element is None:
        return []
    value: Any = element.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").split("\\")
    elif isinstance(value, str):
        value = value.split("\\")
    terms = [str(term).strip() for term in value]
    # An empty first term means the default repertoire (ISO IR 6).
    return terms if any(terms) else []


def _python_encoding(term: str) -> str | None:
    if term in python_encoding:
        return python_encoding[term]
    if _SINGLE_BYTE_SPELLING.match(term):
        return python_encoding.get("ISO_IR" + term[6:])
    if _CODE_EXTENSION_SPELLING.match(term):
        return python_encoding.get("ISO 2022 IR " + term[12:])
    return None


def _text_decodes(dataset: Dataset, encoding: str) -> bool:
    """Return whether every raw text value of the top-level data set decodes with `encoding`."""
    for tag in list(dataset.keys()):
        element = dataset.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes):
            continue
        if _value_representation(element) not in _TEXT_VRS or _ESCAPE in element.value:
            continue
        try:
            element.value.decode(encoding)
        except UnicodeDecodeError:
            return False
    return True


def _value_representation(element: RawDataElement) -> str | None:
    if element.VR:
        return str(element.VR)
    try:
        return dictionary_VR(element.tag)
    except KeyError:
        return None  # a private tag without a dictionary entry
