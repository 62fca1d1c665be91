"""Application-level encryption of patient identifiers and the keyed hash used to find them.

Each identifier is sealed with AES-256-GCM under PATIENT_DATA_KEY. The associated data
binds a ciphertext to its study and field, so a value copied into another row or column
fails to decrypt. Patient IDs are found through HMAC-SHA256 of the normalized ID under a
second key derived from the same key with HKDF, so the search column reveals nothing
without the key.

In production PATIENT_DATA_KEY is the plaintext of a KMS data key: the deployment keeps
only the KMS-encrypted copy and decrypts it at start-up (envelope encryption), so
rotating the KMS key does not touch the rows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: First byte of every ciphertext, so that a later key or algorithm can be distinguished.
CIPHERTEXT_VERSION = b"\x01"
NONCE_BYTES = 12
_SEARCH_KEY_INFO = b"vizier-med patient-id search v1"
_DEVELOPMENT_KEY_INFO = b"vizier-med development patient-data key v1"


class PatientDataUnreadable(Exception):
    """A ciphertext failed authentication: another key, another row, or altered bytes."""


def normalize_patient_id(patient_id: str) -> str:
    """Return the form of a patient ID that search compares: NFKC, trimmed, upper case."""
    return unicodedata.normalize("NFKC", patient_id).strip().upper()


class PatientDataCipher:
    """Seal and open identifier values, and compute the patient ID search hash."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError(f"the patient data key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._search_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_SEARCH_KEY_INFO
        ).derive(key)

    @classmethod
    def from_settings(cls, settings) -> PatientDataCipher:
        """Build the cipher from PATIENT_DATA_KEY, or in development from SECRET_KEY.

        Production refuses to start without PATIENT_DATA_KEY (`Settings.check`).
        """
        if settings.patient_data_key:
            return cls(base64.b64decode(settings.patient_data_key, validate=True))
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_DEVELOPMENT_KEY_INFO
        ).derive(settings.secret_key.encode())
        return cls(derived)

    def encrypt(self, value: str, *, study_id: uuid.UUID, field: str) -> bytes:
        """Return version, random nonce and AES-GCM ciphertext of `value` for one study field."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode(), _associated_data(study_id, field))
        return CIPHERTEXT_VERSION + nonce + sealed

    def decrypt(self, token: bytes, *, study_id: uuid.UUID, field: str) -> str:
        """Return the value sealed by `encrypt`; raise PatientDataUnreadable when it fails."""
        if not token.startswith(CIPHERTEXT_VERSION) or len(token) < 1 + NONCE_BYTES + 16:
            raise PatientDataUnreadable(f"{field} of study {study_id} is not a known ciphertext")
        nonce = token[1 : 1 + NONCE_BYTES]
        try:
            plain = self._aead.decrypt(
                nonce, token[1 + NONCE_BYTES :], _associated_data(study_id, field)
            )
        except InvalidTag:
            raise PatientDataUnreadable(f"{field} of study {study_id} failed to decrypt") from None
        return plain.decode()

    def patient_id_hash(self, patient_id: str) -> str:
        """Return the hex HMAC-SHA256 of the normalized patient ID under the search key."""
        normalized = normalize_patient_id(patient_id).encode()
        return hmac.new(self._search_key, normalized, hashlib.sha256).hexdigest()


def _associated_data(study_id: uuid.UUID, field: str) -> bytes:
    return f"study:{study_id}:{field}".encode()
