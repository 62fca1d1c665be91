"""The segmentation category catalogue in `portal/data/categories.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CATALOGUE_PATH = Path(__file__).parent / "data" / "categories.json"


@dataclass(frozen=True)
class Category:
    value: int
    key: str
    names: dict[str, str]
    color: str
    snomed_ct: str | None

    def name(self, locale: str) -> str:
        """Return the name in `locale` (`pt_BR` or `en`), falling back to pt_BR."""
        language = str(locale).replace("-", "_")
        if language in self.names:
            return self.names[language]
        if language.split("_")[0] == "en":
            return self.names["en"]
        return self.names["pt_BR"]


@cache
def load_categories() -> tuple[Category, ...]:
    raw = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    return tuple(
        Category(
            value=item["value"],
            key=item["key"],
            names=dict(item["name"]),
            color=item["color"],
            snomed_ct=item.get("snomed_ct"),
        )
        for item in raw["categories"]
    )


def categories_by_key() -> dict[str, Category]:
    return {category.key: category for category in load_categories()}


def categories_by_value() -> dict[int, Category]:
    return {category.value: category for category in load_categories()}
