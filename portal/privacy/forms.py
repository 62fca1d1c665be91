"""Forms of the patient data pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length

from portal.privacy.identifiers import MAX_PATIENT_ID_LENGTH


class PatientLookupForm(FlaskForm):
    patient_id = StringField(
        _l("Patient ID"),
        validators=[
            DataRequired(_l("Enter the patient ID.")),
            Length(max=MAX_PATIENT_ID_LENGTH, message=_l("At most 64 characters.")),
        ],
    )


class ErasureForm(PatientLookupForm):
    confirm = BooleanField(
        _l("I understand that this deletes the data now and cannot be undone."),
        validators=[DataRequired(_l("Confirm the deletion first."))],
    )
