"""Every ``--json`` document the tests see is checked against ``docs/json-schema.json``.

``check(argv, stdout)`` picks the schema of the command in ``argv`` (errors have their own)
and validates the document; commands the schema does not cover yet are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "json-schema.json").read_text()
)
_VALIDATOR = jsonschema.Draft202012Validator


def schema_name(argv: Sequence[str]) -> str | None:
    """The definition in the schema for the command ``argv`` runs."""
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return None
    command = words[0]
    if command in ("domain", "firmware", "audit") and len(words) > 1:
        return f"{command}_{words[1]}"
    if command == "drives" and len(words) > 1 and words[1] == "reset":
        return "drives_reset"
    if command == "sets" and "--set" in argv:
        return "sets_one"
    if command in SCHEMA["$defs"]:
        return command
    return None


def check(argv: Sequence[str], stdout: str) -> Any:
    """The document ``stdout`` holds, validated against its command's schema."""
    document = json.loads(stdout)
    name = "error" if isinstance(document, dict) and set(document) == {"error"} else None
    name = name or schema_name(argv)
    if name is not None:
        schema = {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]}
        _VALIDATOR(schema).validate(document)
    return document
