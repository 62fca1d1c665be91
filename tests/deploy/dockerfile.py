"""A small reader of the Dockerfile's stages, for the deployment tests."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from portal.config import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for name, value in self.instructions if name == keyword]


def read_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Return the stages by name, with each instruction's keyword and joined arguments."""
    text = path.read_text(encoding="utf-8")
    lines = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert match, f"unreadable FROM line: {line}"
            name = match.group(2) or f"stage{len(stages)}"
            current = stages[name] = Stage(name=name, base=match.group(1))
        elif current is not None:
            current.instructions.append((keyword, rest.strip()))
    return stages


def final_stage(stages: dict[str, Stage]) -> Stage:
    return list(stages.values())[-1]
