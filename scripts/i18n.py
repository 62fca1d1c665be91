"""Keep the translation catalogues in step with the code.

    python -m scripts.i18n update   extract messages, update pt_BR and en, fill en from msgids
    python -m scripts.i18n check    list messages of the code without a translation; exit 1 if any

Message ids are English, so the English catalogue repeats each id; Portuguese is written
by hand in portal/translations/pt_BR/LC_MESSAGES/messages.po.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "portal" / "translations"
TEMPLATE = TRANSLATIONS / "messages.pot"
LOCALES = ("pt_BR", "en")


def catalogue_path(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def pybabel(*args: str) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "pybabel"), "--quiet", *args], check=True, cwd=ROOT
    )


def extract(template: Path) -> None:
    """Write the messages of the code and templates to `template`."""
    pybabel(
        "extract",
        "-F",
        "babel.cfg",
        "-k",
        "_l",
        "-k",
        "lazy_gettext",
        "--no-location",
        "--sort-output",
        "--omit-header",
        "-o",
        str(template),
        ".",
    )


def update() -> None:
    extract(TEMPLATE)
    for locale in LOCALES:
        if catalogue_path(locale).exists():
            pybabel(
                "update",
                "-i",
                str(TEMPLATE),
                "-d",
                str(TRANSLATIONS),
                "-l",
                locale,
                "--no-fuzzy-matching",
                "--ignore-obsolete",
            )
        else:
            pybabel("init", "-i", str(TEMPLATE), "-d", str(TRANSLATIONS), "-l", locale)
    for locale in LOCALES:
        path = catalogue_path(locale)
        with path.open("rb") as handle:
            catalogue = read_po(handle, locale=locale)
        catalogue.fuzzy = False
        catalogue.project = "Vizier Med portal"
        if locale == "en":
            for message in catalogue:
                if message.id and not message.string:
                    message.string = message.id
        with path.open("wb") as handle:
            write_po(handle, catalogue, no_location=True, sort_output=True)


def missing_translations() -> dict[str, list[str]]:
    """Return, per locale, the messages of the code that have no translation.

    The messages are extracted afresh rather than read from messages.pot, so a message
    changed in the code is reported even when `update` was not run after the change.
    """
    with tempfile.TemporaryDirectory() as folder:
        template = Path(folder) / "messages.pot"
        extract(template)
        with template.open("rb") as handle:
            expected = {(m.id, m.context) for m in read_po(handle) if m.id}
    missing = {}
    for locale in LOCALES:
        with catalogue_path(locale).open("rb") as handle:
            catalogue = read_po(handle, locale=locale)
        translated = {(m.id, m.context) for m in catalogue if m.id and m.string and not m.fuzzy}
        missing[locale] = sorted(
            str(message_id) if context is None else f"{context}|{message_id}"
            for message_id, context in expected - translated
        )
    return missing


def main(argv: list[str]) -> int:
    if argv == ["update"]:
        update()
        return 0
    if argv == ["check"]:
        missing = missing_translations()
        for locale, ids in missing.items():
            for message_id in ids:
                print(f"{locale}: missing translation for {message_id!r}")
        return 1 if any(missing.values()) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
