"""Naming a slot and logging into it with a PIN the caller already has."""

from __future__ import annotations

from ...errors import EXIT_AUTH, EXIT_USAGE
from ...hsm import Hsm, HsmSession, PinError, PinLockedError, SlotError


class SlotChoiceError(SlotError):
    """A slot reference names no slot, or several: a usage error."""

    exit_code = EXIT_USAGE


class PinRefused(PinError):
    """The token refused the PIN (or has locked it)."""

    exit_code = EXIT_AUTH


def resolve_slot(hsm: Hsm, text: str) -> int:
    """The slot ``text`` names: a slot id as `sealkeep slots` lists it, or a token label.

    An id and a label naming two different slots, or a label several tokens carry, is
    refused with the candidates named: nothing ever guesses which slot to log into.
    """
    slots = hsm.slots()
    wanted = text.strip()
    by_id = [s for s in slots if wanted.isdigit() and s.slot_id == int(wanted)]
    by_label = [s for s in slots if s.token_present and s.label == wanted]
    found = {s.slot_id: s for s in by_id + by_label}
    if len(found) == 1:
        return next(iter(found))
    if not found:
        known = ", ".join(
            f"{s.slot_id} ({s.label!r})" if s.label else str(s.slot_id) for s in slots
        )
        raise SlotChoiceError(
            f"no slot has the id or token label {wanted!r}; the slots are: {known or 'none'}"
        )
    names = ", ".join(f"slot {i} (token {s.label!r})" for i, s in sorted(found.items()))
    raise SlotChoiceError(f"{wanted!r} names several slots: {names}; give the slot id")


def describe_slot(hsm: Hsm, slot_id: int) -> str:
    """``slot N (token 'LABEL')``, after checking the slot holds an initialised token:
    what is wrong with a slot is said before anyone types a PIN."""
    info = hsm.slot(slot_id)
    where = f"slot {slot_id} (token {info.label!r})" if info.label else f"slot {slot_id}"
    if not info.token_present or not info.initialized:
        raise SlotError(f"{where} has no initialised token: choose a slot that holds one")
    return where


def login(hsm: Hsm, slot_id: int, pin: str) -> HsmSession:
    """A logged-in session on ``slot_id``; a refused PIN is :class:`PinRefused`."""
    try:
        return hsm.open(slot_id, pin)
    except PinLockedError as exc:
        raise PinRefused(f"{exc}: the security officer must unlock it") from None
    except PinError as exc:
        raise PinRefused(f"{exc}. Nothing was changed.") from None
