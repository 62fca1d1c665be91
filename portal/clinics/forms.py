"""Forms of the clinic pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, IntegerField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, NumberRange

from portal.clinics.models import ROLE_TITLES, Role

ROLE_CHOICES = [
    SelectChoice(Role.DOCTOR.value, ROLE_TITLES[Role.DOCTOR]),
    SelectChoice(Role.ADMIN.value, ROLE_TITLES[Role.ADMIN]),
]
LANGUAGE_CHOICES = [SelectChoice("pt_BR", "Português"), SelectChoice("en", "English")]


class InviteForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[InputRequired(_l("Enter the e-mail address."))])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, default=Role.DOCTOR.value)
    locale = SelectField(_l("Language of the e-mail"), choices=LANGUAGE_CHOICES, default="pt_BR")


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=ROLE_CHOICES)


class ConfirmForm(FlaskForm):
    """A form with only the CSRF token, for actions confirmed by a button."""


class SwitchClinicForm(FlaskForm):
    clinic_id = HiddenField(validators=[InputRequired()])


class SeatsForm(FlaskForm):
    seats = IntegerField(_l("Seats"), validators=[InputRequired(), NumberRange(min=1, max=100000)])
