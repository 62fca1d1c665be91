"""Forms of the API-key page."""

from __future__ import annotations

from datetime import date

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError


class CreateApiKeyForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Give the key a name.")), Length(max=200)],
        description=_l("Which integration uses the key, for example the RIS."),
    )
    expires_on = DateField(
        _l("Valid until (optional)"),
        validators=[Optional()],
        description=_l("The key stops working at the end of this day. Leave empty for no expiry."),
    )

    def validate_expires_on(self, field) -> None:
        if field.data is not None and field.data < date.today():
            raise ValidationError(_l("Choose today or a later date."))


class RevokeApiKeyForm(FlaskForm):
    """Carries only the CSRF token."""
