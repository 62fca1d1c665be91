"""Imports every model module so that the metadata knows all tables (for Alembic)."""

from portal.audit.models import AuditChainHead, AuditEvent  # noqa: F401
from portal.auth.models import SignInSession  # noqa: F401
from portal.breaker import CircuitBreakerRecord  # noqa: F401
from portal.clinics.models import (  # noqa: F401
    ApiKey,
    Clinic,
    Identity,
    Invitation,
    Membership,
    User,
)
from portal.studies.models import Artifact, Attempt, Study  # noqa: F401
