"""Imports every model module so that the metadata knows all tables (for Alembic)."""

from portal.breaker import CircuitBreakerRecord  # noqa: F401
from portal.clinics.models import ApiKey, Clinic, Identity, Membership, User  # noqa: F401
from portal.studies.models import Artifact, Attempt, Study  # noqa: F401
