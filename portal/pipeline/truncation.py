"""Detection of DICOM members that end before the data their header declares.

pydicom stops quietly at the end of the data, so a truncated file parses as a shorter,
seemingly complete one. These checks tell the two apart without reading pixel values.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_UNDEFINED_LENGTH = 0xFFFFFFFF
#: The (FFFE,E000) Item tag, little endian.
_ITEM = b"\xfe\xff\x00\xe0"


class MemberTruncated(ValueError):
    """The member ends inside an element, or before the pixel data its header announces."""


class EndTrackingStream:
    """A read-only stream over a member that records whether a read stopped short at its end.

    It has no `name` attribute on purpose: pydicom quotes a stream's name in some warnings,
    and a ZIP member's name often contains the patient's name.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        #: A read returned fewer bytes than requested (the end of the member was reached).
        self.reached_end = False
        #: A read returned some, but not all, of the requested bytes: the member ends
        #: inside a tag or value.
        self.ended_inside_read = False

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if 0 <= size and len(data) < size:
            self.reached_end = True
            self.ended_inside_read = self.ended_inside_read or len(data) > 0
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def has_part10_prefix(handle: BinaryIO) -> bool:
    """Return whether the member starts with the 128-byte preamble and "DICM", then rewind."""
    prefix = handle.read(132)
    handle.seek(0)
    return len(prefix) == 132 and prefix[128:] == b"DICM"


def has_short_value(dataset: Dataset) -> bool:
    """Return whether a raw element of the data set is shorter than its declared length."""
    for tag in list(dataset.keys()):
        element = dataset.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement) or element.length == _UNDEFINED_LENGTH:
            continue
        if isinstance(element.value, bytes) and len(element.value) < element.length:
            return True
    return False


def expects_pixel_data(dataset: Dataset) -> bool:
    """Return whether the header describes an image: Rows, or an "... Image Storage" SOP class."""
    if "Rows" in dataset:
        return True
    file_meta = getattr(dataset, "file_meta", None)
    sop_class = dataset.get("SOPClassUID") or (
        file_meta.get("MediaStorageSOPClassUID") if file_meta else None
    )
    if not sop_class:
        return False
    return "Image Storage" in pydicom.uid.UID(str(sop_class)).name


def check_fragments_end(handle: BinaryIO, size: int) -> None:
    """Walk the items of encapsulated pixel data; raise `MemberTruncated` if the data ends early.

    `handle` is positioned at the first item (the offset table). Encapsulated data is always
    little endian. An unexpected tag stops the walk without a verdict: the decoder reports it.
    """
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise MemberTruncated()
        tag, length = header[:4], struct.unpack("<I", header[4:])[0]
        if tag != _ITEM:
            return  # the sequence delimiter, or damage that the decoder reports
        if handle.tell() + length > size:
            raise MemberTruncated()
        handle.seek(length, 1)
