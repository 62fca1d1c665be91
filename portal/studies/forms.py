"""Forms of the study pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, SelectMultipleField, widgets
from wtforms.validators import ValidationError

from portal.categories import load_categories
from portal.privacy.legal_basis import LEGAL_BASES
from portal.studies.models import DEFAULT_LEGAL_BASIS


class CheckboxListField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class UploadForm(FlaskForm):
    file = FileField(_l("DICOM study (ZIP)"), validators=[FileRequired(_l("Choose a ZIP file."))])
    categories = CheckboxListField(_l("Segmentation categories"))
    legal_basis = SelectField(_l("Legal basis and purpose"), default=DEFAULT_LEGAL_BASIS)

    def __init__(self, *args, locale: str = "pt_BR", **kwargs):
        super().__init__(*args, **kwargs)
        self.legal_basis.choices = [
            (basis.code, f"{basis.title} ({basis.article})") for basis in LEGAL_BASES.values()
        ]
        self.categories.choices = [
            (category.key, category.name(locale)) for category in load_categories()
        ]
        if not self.is_submitted():
            # Every category the provider supports is preselected.
            self.categories.data = [category.key for category in load_categories()]

    def validate_file(self, field) -> None:
        filename = (field.data.filename or "") if field.data else ""
        if not filename.lower().endswith(".zip"):
            raise ValidationError(_l("The file must be a ZIP archive (.zip)."))

    def validate_categories(self, field) -> None:
        if not field.data:
            raise ValidationError(_l("Choose at least one category."))
