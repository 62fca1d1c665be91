import re

from babel.messages.pofile import read_po

from scripts.i18n import LOCALES, catalogue_path, missing_translations

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def test_every_message_is_translated():
    assert missing_translations() == {locale: [] for locale in LOCALES}


def test_translations_keep_placeholders():
    for locale in LOCALES:
        with catalogue_path(locale).open("rb") as handle:
            catalogue = read_po(handle, locale=locale)
        for message in catalogue:
            if message.id and message.string:
                assert sorted(PLACEHOLDER.findall(message.id)) == sorted(
                    PLACEHOLDER.findall(message.string)
                ), (locale, message.id)


def test_portuguese_differs_from_english():
    with catalogue_path("pt_BR").open("rb") as handle:
        catalogue = read_po(handle, locale="pt_BR")
    messages = [m for m in catalogue if m.id and len(m.id) > 12]
    unchanged = [m.id for m in messages if m.string == m.id]
    assert unchanged == []
