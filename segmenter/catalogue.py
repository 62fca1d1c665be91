"""Category catalogue of the portal, read from ``portal/data/categories.json``."""

import json
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CATALOGUE_PATH = REPOSITORY_ROOT / "portal" / "data" / "categories.json"

#: Category keys that the CT segmentation in ``segmenter.ct`` can produce.
SUPPORTED_KEYS = ("lung", "airway", "adipose_tissue", "soft_tissue", "bone")


def load_label_values(path: Path = CATALOGUE_PATH) -> dict[str, int]:
    """Read the catalogue and map each supported category key to its label value.

    Raises ``KeyError`` when the catalogue lacks a key that the segmenter produces, because a
    segmenter that silently dropped a category would return incomplete masks.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    values_by_key = {entry["key"]: int(entry["value"]) for entry in document["categories"]}
    missing = [key for key in SUPPORTED_KEYS if key not in values_by_key]
    if missing:
        raise KeyError(f"category catalogue {path} lacks the keys {missing}")
    return {key: values_by_key[key] for key in SUPPORTED_KEYS}
