"""Forms of the webhooks pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length

from portal.webhooks.guard import MAX_URL_LENGTH
from portal.webhooks.models import WebhookEvent

EVENT_TITLES = {
    WebhookEvent.STUDY_SUCCEEDED: _l("Study succeeded (study.succeeded)"),
    WebhookEvent.STUDY_FAILED: _l("Study failed (study.failed)"),
}


class CheckboxListField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class EndpointForm(FlaskForm):
    url = StringField(
        _l("URL"),
        validators=[
            InputRequired(_l("Enter the endpoint's URL.")),
            Length(max=MAX_URL_LENGTH),
        ],
        description=_l("An https:// address on the public internet that accepts POST requests."),
    )
    events = CheckboxListField(
        _l("Events"),
        choices=[SelectChoice(event.value, title) for event, title in EVENT_TITLES.items()],
        default=[event.value for event in WebhookEvent],
        validators=[DataRequired(_l("Choose at least one event."))],
    )
