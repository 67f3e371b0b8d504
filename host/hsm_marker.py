"""The public marker of a slot's backup domain: a data object, readable without logging in,
that names the domain, its key hierarchy and its profile (``sealkeep slots`` shows them)."""

from __future__ import annotations

from typing import Any

from pkcs11 import ObjectClass

from .hsm_base import DOMAIN_ID_LEN, DOMAIN_MARKER_LABEL, HIERARCHY_SHARED_KEK, A
from .hsm_caps import STANDARD, Profile


def read_marker(token: Any) -> tuple[bytes, int, int] | None:
    """(domain id, key hierarchy, profile number) from the public marker object, without
    logging in."""
    with token.open() as session:
        for obj in session.get_objects({A.CLASS: ObjectClass.DATA, A.LABEL: DOMAIN_MARKER_LABEL}):
            parsed = parse_marker(obj[A.VALUE])
            if parsed is not None:
                return parsed
    return None


def parse_marker(value: object) -> tuple[bytes, int, int] | None:
    """(domain id, key hierarchy, profile number) of a marker's value.

    The marker of key hierarchy 1 holds the domain id alone; later ones add a version byte,
    and domains of a profile other than ``standard`` its number after that.
    """
    if not isinstance(value, bytes) or not DOMAIN_ID_LEN <= len(value) <= DOMAIN_ID_LEN + 2:
        return None
    if len(value) == DOMAIN_ID_LEN:
        return value, HIERARCHY_SHARED_KEK, STANDARD.number
    profile = value[DOMAIN_ID_LEN + 1] if len(value) == DOMAIN_ID_LEN + 2 else STANDARD.number
    return value[:DOMAIN_ID_LEN], value[DOMAIN_ID_LEN], profile


def marker_value(domain_id: bytes, hierarchy: int, profile: Profile) -> bytes:
    """What :func:`parse_marker` reads back."""
    if hierarchy == HIERARCHY_SHARED_KEK:
        return domain_id
    extra = b"" if profile is STANDARD else bytes([profile.number])
    return domain_id + bytes([hierarchy]) + extra
