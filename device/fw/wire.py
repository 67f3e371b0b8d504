"""Errors a handler raises to answer with an ERROR frame, and request body checks."""


class WireError(Exception):
    """An error reply: a protocol error code, a short text and optional extra fields,
    by name: ``expected`` (ERROR field 3), ``retry_ms`` (field 4)."""

    def __init__(self, code: int, text: str, **extra: int) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.extra = extra


_TYPES = {"u": int, "b": memoryview, "t": str, "?": bool, "a": list, "m": dict}


def check(schema: dict, body: object) -> "str | None":
    """``protocol.messages.check`` for bodies decoded with byte strings as views: None if
    body fits schema, else what is wrong (the same words)."""
    if not isinstance(body, dict):
        return "body must be a map"
    for key, spec in schema.items():
        if key not in body:
            if spec[2]:
                return f"missing field {key} ({spec[0]})"
            continue
        value = body[key]
        kind = spec[1]
        if value is None and len(kind) == 2 and kind.endswith("?"):
            continue
        t = _TYPES[kind[0]]
        bad = not isinstance(value, t)
        if t is int and not bad:
            bad = isinstance(value, bool) or value < 0
        if bad:
            return f"field {key} ({spec[0]}) has the wrong type"
    return None
