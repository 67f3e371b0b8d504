"""The HSM side of sealkeep, over PKCS#11 (python-pkcs11).

What lives here: finding the module and the slots; opening a logged-in session; listing a
slot's objects with every attribute that matters and whether each can be backed up; the
backup domain (its keys, imported as non-extractable token objects, plus a public marker
naming the domain and its key hierarchy); the per-drive owner credential (an HMAC computed
inside the HSM); and each set's keys. The pieces: :mod:`sealkeep.hsm_raw` (direct calls, for
speed and for templates python-pkcs11 cannot pass), :mod:`sealkeep.hsm_base` (errors,
attributes, records), :mod:`sealkeep.hsm_keys` (the key hierarchy and its templates),
:mod:`sealkeep.hsm_listing` (listing a slot), :mod:`sealkeep.hsm_marker` (the domain's
public marker), :mod:`sealkeep.hsm_setkeys` (a slot's set keys), :mod:`sealkeep.hsm_sets`
(backup and restore of a slot's keys), :mod:`sealkeep.hsm_proof` (proving a restored key by
use). Public names are importable from here.

Nothing here is specific to one vendor. Where SoftHSM2 needs a workaround it says so.

Speeds measured with SoftHSM2 2.6.1 (file object store) on a 2-core machine, ±30%:
wrapping ~10,000-18,000 AES keys/s and ~2,400-2,900 RSA-2048 keys/s; unwrapping into
session objects ~4,400-10,000 keys/s; unwrapping into token objects only ~55-130 keys/s
(one file written per object), so a large restore is bounded by the HSM. Every
C_GetAttributeValue costs ~25 µs there plus ~1 µs per attribute, and python-pkcs11 spends
four calls and a new Python class on each object it finds, so listing calls the module
directly: one search for every handle, one call per object (~100 µs per object in all,
against ~250 µs), falling back to python-pkcs11 where that does not work. Any search scans
the whole token (~0.2 s in a token of 10,000 objects), so presence checks use one index of
the token built up front, and a session finds the domain keys once: from a listing of the
slot where it made one (a backup does), else with one search. Keys this process makes or
lists are used by handle through direct calls: python-pkcs11's view of a handle costs a
search to find. python-pkcs11 initialises the module without locking, so the module is
initialised again for threads where it takes that (:func:`initialise_for_threads`); then a
restore unwraps in several sessions at once (:mod:`sealkeep.hsm_unwrap_pool`). Everything
else calls the module from one thread; drives are asked in other threads meanwhile.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pkcs11
from pkcs11 import (
    Attribute,
    KeyType,
    Mechanism,
    ObjectClass,
    TokenFlag,
)
from pkcs11.exceptions import PKCS11Error

from .hsm_base import (
    DOMAIN_APPLICATION,
    DOMAIN_ID_INFO,
    DOMAIN_ID_LEN,
    DOMAIN_LABELS,
    DOMAIN_MARKER_LABEL,
    DOMAIN_OWNER_LABEL,
    DOMAIN_SEAL_LABEL,
    DOMAIN_SECRET_LEN,
    DOMAIN_WRAP_LABEL,
    ENV_MODULE,
    HIERARCHY_PER_PURPOSE,
    HIERARCHY_SHARED_KEK,
    OWNER_KEY_INFO,
    WRAP_MECHANISM,
    A,
    DomainError,
    HsmError,
    ModuleError,
    ObjectInfo,
    PinError,
    PinLockedError,
    Proof,
    RestoreOutcome,
    SetKeyError,
    SlotError,
    SlotInfo,
    UnsealError,
    _ListedObject,
    _Mapper,
    _text,
    class_name,
    domain_id_from_secret,
    key_bits,
    key_type_name,
    new_domain_secret,
    owner_credential_from_secret,
    owner_root_hmac,
    replay_template,
    resolve_module,
    split_domain_secret,
)
from .hsm_caps import (
    PORTABLE,
    PROFILES,
    STANDARD,
    MechanismMissing,
    Profile,
    choose_profile,
    possible_profiles,
    require_capabilities,
    require_mechanisms,
)
from .hsm_keys import (
    MANIFEST_KEY_TEMPLATE,
    PORTABLE_SEALED_TEMPLATE,
    SET_KEY_TEMPLATE,
    DomainKeyValues,
    SetKey,
    TokenTraits,
    detect_traits,
    domain_key_template,
    hierarchy_1_wrap_key_template,
    owner_key_template,
)
from .hsm_listing import SlotListing
from .hsm_marker import marker_value, parse_marker, read_marker
from .hsm_protections import probe_protections
from .hsm_raw import HsmCallError, RawError, RawModule, RawTemplate
from .hsm_setkeys import SetKeys
from .hsm_sets import SetContents
from .hsm_unwrap_pool import UnwrapSessions
from .manifest import Attributes, AttrValue, TokenInfo

# --- module and session -------------------------------------------------------------------


__all__ = [
    "DOMAIN_SECRET_LEN",
    "DOMAIN_WRAP_LABEL",
    "ENV_MODULE",
    "OWNER_KEY_INFO",
    "WRAP_MECHANISM",
    "DomainError",
    "Hsm",
    "HsmError",
    "HsmSession",
    "ModuleError",
    "ObjectInfo",
    "PinError",
    "PinLockedError",
    "Proof",
    "RestoreOutcome",
    "SetKey",
    "SetKeyError",
    "SlotError",
    "SlotInfo",
    "UnsealError",
    "class_name",
    "domain_id_from_secret",
    "initialise_for_threads",
    "key_bits",
    "key_type_name",
    "new_domain_secret",
    "owner_credential_from_secret",
    "owner_root_hmac",
    "reload_module",
    "replay_template",
    "resolve_module",
    "split_domain_secret",
]


_CKR_USER_ALREADY_LOGGED_IN = 0x100
# What a direct C_Login's refusal means, as python-pkcs11 names it.
_LOGIN_ERRORS: dict[int, type[PKCS11Error]] = {
    0xA0: pkcs11.exceptions.PinIncorrect,
    0xA1: pkcs11.exceptions.PinInvalid,
    0xA2: pkcs11.exceptions.PinLenRange,
    0xA4: pkcs11.exceptions.PinLocked,
    0x102: pkcs11.exceptions.UserPinNotInitialized,
}


# Per module path: whether it was last initialised to be called from several threads.
_THREAD_SAFE: dict[str, bool] = {}


def initialise_for_threads(module: str) -> bool:
    """Initialise the loaded ``module`` again so several sessions of this process may call it
    at once (see :meth:`RawModule.initialise_for_threads`): whether it can. Only where no
    session of this process is open on it (just loaded, or just re-initialised)."""
    try:
        safe = RawModule(module).initialise_for_threads()
    except RawError:
        safe = False
    except PKCS11Error as exc:
        raise ModuleError(f"cannot initialise PKCS#11 module {module}: {exc}") from None
    _THREAD_SAFE[module] = safe
    return safe


def reload_module(module: str) -> Any:
    """python-pkcs11's library object for ``module``, initialised again (for threads where
    it can be) so that it sees every token there is now; every session of this process on
    it ends."""
    lib = pkcs11.lib(module)
    lib.reinitialize()
    initialise_for_threads(module)
    return lib


class Hsm:
    """A loaded PKCS#11 module.

    python-pkcs11 keeps one library object per module path for the whole process, and the
    module reads its token list when it is first initialised (SoftHSM2 does not see tokens
    created afterwards by another process). A module loaded here for the first time is
    initialised for threads where it can be: a restore then unwraps in several sessions.
    """

    def __init__(self, module: str | None = None) -> None:
        self.module = resolve_module(module)
        # python-pkcs11 (re)initialises a module it has not loaded, or that was finalised:
        # no session of this process is open on it then, so it may be initialised again.
        # (Where python-pkcs11 keeps its modules elsewhere, none is: one thread calls it.)
        loaded = getattr(pkcs11, "_loaded", None)
        fresh = isinstance(loaded, dict) and (
            self.module not in loaded or not getattr(loaded[self.module], "initialized", True)
        )
        try:
            self._lib = pkcs11.lib(self.module)
        except PKCS11Error as exc:
            raise ModuleError(f"cannot load PKCS#11 module {self.module}: {exc}") from None
        if fresh:
            initialise_for_threads(self.module)
        # Per slot: a digest of the PIN we logged in with and how many sessions are open.
        # PKCS#11 logs in per token and process, so a second session cannot check a PIN.
        self._pin_key = secrets.token_bytes(32)
        self._logins: dict[int, tuple[bytes, int]] = {}
        self._raw: RawModule | None = None
        self._raw_failed = False

    @property
    def thread_safe(self) -> bool:
        """Whether sessions of this process may call the module from several threads."""
        return _THREAD_SAFE.get(self.module, False) and self.raw() is not None

    def raw(self) -> RawModule | None:
        """Direct calls into the module for fast listing, or None where they do not work."""
        if self._raw is None and not self._raw_failed:
            try:
                self._raw = RawModule(self.module)
            except RawError:
                self._raw_failed = True
        return self._raw

    def _slots(self) -> list[Any]:
        try:
            return list(self._lib.get_slots(token_present=False))
        except PKCS11Error as exc:
            raise ModuleError(f"cannot list the slots of {self.module}: {exc!r}") from None

    def slots(self) -> list[SlotInfo]:
        """Every slot of the module, with its token and whether it holds a backup domain."""
        result = []
        for slot in self._slots():
            result.append(self._slot_info(slot))
        return result

    def slot(self, slot_id: int) -> SlotInfo:
        return self._slot_info(self._find_slot(slot_id))

    def _find_slot(self, slot_id: int) -> Any:
        slots = self._slots()
        for slot in slots:
            if slot.slot_id == slot_id:
                return slot
        known = ", ".join(str(s.slot_id) for s in slots) or "none"
        raise SlotError(f"there is no slot {slot_id} in {self.module} (slots: {known})")

    def _slot_info(self, slot: Any) -> SlotInfo:
        present = bool(slot.flags & pkcs11.SlotFlag.TOKEN_PRESENT)
        label = serial = model = manufacturer = ""
        initialized = False
        domain_id = None
        hierarchy: int | None = None
        profile: int | None = None
        if present:
            try:
                token = slot.get_token()
                label = token.label
                serial = _text(token.serial)
                model = token.model
                manufacturer = token.manufacturer_id
                initialized = bool(token.flags & TokenFlag.TOKEN_INITIALIZED)
                if initialized:
                    marker = read_marker(token)
                    if marker is not None:
                        domain_id, hierarchy, profile = marker
            except PKCS11Error:
                pass
        return SlotInfo(
            slot_id=slot.slot_id,
            description=slot.slot_description,
            token_present=present,
            initialized=initialized,
            label=label,
            serial=serial,
            model=model,
            manufacturer=manufacturer,
            domain_id=domain_id,
            domain_hierarchy=hierarchy,
            domain_profile=profile,
        )

    def open(self, slot_id: int, pin: str) -> HsmSession:
        """A read/write session on ``slot_id``, logged in as the user with ``pin``."""
        slot = self._find_slot(slot_id)
        info = self._slot_info(slot)
        where = f"slot {slot_id}"
        if not info.token_present:
            raise SlotError(f"{where} has no token")
        if not info.initialized:
            raise SlotError(f"the token in {where} is not initialised")
        where = f"slot {slot_id} (token {info.label!r})"
        token = slot.get_token()
        digest = hmac.new(self._pin_key, pin.encode(), hashlib.sha256).digest()
        mapper = _Mapper()
        raw = self.raw()
        already = False  # another session of this process logged in to the token
        try:
            if raw is None:  # python-pkcs11 logs in, and out as the session closes
                session = token.open(rw=True, user_pin=pin, attribute_mapper=mapper)
            else:
                # The session first, then the login: python-pkcs11 leaves its session open
                # when the login fails, one more per wrong PIN (openCryptoki then refuses to
                # re-initialise the token, and sessions run out).
                session = token.open(rw=True, attribute_mapper=mapper)
                try:
                    raw.login(int(session.handle), pin.encode())
                except HsmCallError as exc:
                    already = exc.rv == _CKR_USER_ALREADY_LOGGED_IN
                    if not already:
                        with suppress(PKCS11Error):
                            session.close()
                        raise _LOGIN_ERRORS.get(exc.rv, PKCS11Error)(exc.name) from None
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            session = token.open(rw=True, attribute_mapper=mapper)
            already = True
        except (
            pkcs11.exceptions.PinIncorrect,
            pkcs11.exceptions.PinInvalid,
            pkcs11.exceptions.PinLenRange,
        ):
            raise PinError(f"wrong PIN for {where}") from None
        except pkcs11.exceptions.PinLocked:
            raise PinLockedError(
                f"the PIN of {where} is locked after too many wrong tries"
            ) from None
        except pkcs11.exceptions.UserPinNotInitialized:
            raise SlotError(f"the user PIN of {where} has not been set") from None
        except PKCS11Error as exc:
            raise SlotError(f"cannot open a session on {where}: {exc!r}") from None
        if already:
            # Another session of this process is logged in to the token already; a second
            # login is refused by PKCS#11, so the PIN is checked against the first one's.
            known = self._logins.get(slot_id)
            if known is not None and not hmac.compare_digest(known[0], digest):
                with suppress(PKCS11Error):
                    session.close()
                raise PinError(f"wrong PIN for {where}")
        _, count = self._logins.get(slot_id, (digest, 0))
        self._logins[slot_id] = (digest, count + 1)
        return HsmSession(self, slot_id, info, session, logs_out=raw is not None and not already)

    def _closed(self, slot_id: int) -> None:
        known = self._logins.get(slot_id)
        if known is None:
            return
        if known[1] <= 1:
            del self._logins[slot_id]
        else:
            self._logins[slot_id] = (known[0], known[1] - 1)


_DOMAIN_KEY_ORDER = (DOMAIN_WRAP_LABEL, DOMAIN_OWNER_LABEL, DOMAIN_SEAL_LABEL)


def _matches(attributes: Attributes, template: dict[Attribute, Any]) -> bool:
    """Whether listed ``attributes`` hold every value of a search ``template``, as the token
    compares them (an attribute the object lacks matches nothing)."""
    for kind, wanted in template.items():
        value = attributes.get(int(kind))
        if isinstance(wanted, bool):
            if value is not wanted:
                return False
        elif isinstance(value, bool) or value != int(wanted):
            return False
    return True


@dataclass(frozen=True)
class _DomainKeys:
    """The domain's keys in a slot: wrap and owner always, seal in key hierarchy 2."""

    wrap: Any | None
    owner: Any | None
    seal: Any | None


class HsmSession(SlotListing, SetKeys, SetContents):
    """A logged-in read/write session on one slot."""

    def __init__(
        self, hsm: Hsm, slot_id: int, info: SlotInfo, session: Any, logs_out: bool = False
    ) -> None:
        self.hsm = hsm
        self.slot_id = slot_id
        self.info = info
        self.session = session
        self._logs_out = logs_out  # it logged in by a direct call: it logs out as it closes
        self._closed = False
        self._domain_keys: _DomainKeys | None = None
        self._traits: TokenTraits | None = None
        self._profile: Profile | None = None  # of the domain in _domain_keys
        self._mapper = _Mapper()
        self._decoded: dict[tuple[int, bytes], AttrValue | None] = {}

    def __enter__(self) -> HsmSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            raw = self.hsm.raw()
            if self._logs_out and raw is not None:
                with suppress(PKCS11Error):
                    raw.logout(int(self.session.handle))
            with suppress(PKCS11Error):
                self.session.close()
            self.hsm._closed(self.slot_id)

    def __repr__(self) -> str:
        return f"<HsmSession slot {self.slot_id} token {self.info.label!r}>"

    @property
    def where(self) -> str:
        return f"slot {self.slot_id} (token {self.info.label!r})"

    def token_info(self) -> TokenInfo:
        return TokenInfo(
            slot_id=self.slot_id,
            label=self.info.label,
            serial=self.info.serial,
            model=self.info.model,
            manufacturer=self.info.manufacturer,
        )

    # -- objects ---------------------------------------------------------------------------

    def objects(self) -> list[ObjectInfo]:
        """Every token object of the slot: keys, certificates and data objects with what is
        captured of them, objects of other classes with their class and label."""
        try:
            result = self._objects_direct()
        except RawError:
            result = self._objects_pkcs11()
        result.sort(key=lambda o: (o.label, o.id, o.object_class))
        if self._domain_keys is None:
            self._learn_domain(result)
        return result

    def _learn_domain(self, listed: list[ObjectInfo]) -> None:
        """Take the domain's keys and marker from a listing of the whole slot, as the
        searches of :meth:`_find_domain_keys` and :meth:`domain_profile` would find them:
        two scans of the token fewer. Anything doubtful (a label twice, no marker, a profile
        unknown) is left to those searches, which say what is wrong."""
        keys: dict[str, list[Any]] = {label: [] for label in DOMAIN_LABELS}
        markers: list[ObjectInfo] = []
        for item in listed:
            if item.object_class == ObjectClass.DATA and item.label == DOMAIN_MARKER_LABEL:
                markers.append(item)
            elif item.label in keys and _matches(item.attributes, self._DOMAIN_KEY_SEARCH):
                keys[item.label].append(item.handle)
        if len(markers) != 1 or any(len(found) > 1 for found in keys.values()):
            return
        wrap, owner, seal = (keys[label] for label in _DOMAIN_KEY_ORDER)
        if not wrap or not owner:
            return
        parsed = parse_marker(markers[0].attributes.get(int(A.VALUE)))
        profile = PROFILES.get(parsed[2]) if parsed is not None else None
        if profile is None:
            return
        self._domain_keys = _DomainKeys(wrap[0], owner[0], seal[0] if seal else None)
        self._profile = profile

    # -- backup domain ---------------------------------------------------------------------

    # Every domain key is made by :meth:`import_domain` with these attributes; few user keys
    # share them all, so one search finds the domain keys among a handful of objects. Each
    # search scans the whole token (~0.2 s in a SoftHSM2 token of 10,000 objects).
    _DOMAIN_KEY_SEARCH = {
        A.CLASS: ObjectClass.SECRET_KEY,
        A.EXTRACTABLE: False,
        A.MODIFIABLE: False,
        A.ENCRYPT: False,
        A.DECRYPT: False,
        A.VERIFY: False,
        A.DERIVE: False,
    }

    def _find_domain_keys(self) -> _DomainKeys:
        found: dict[str, list[Any]] = {label: [] for label in DOMAIN_LABELS}
        for obj in self._token_objects(self._DOMAIN_KEY_SEARCH):
            with suppress(PKCS11Error):
                label = obj[A.LABEL]
                if label in found:
                    found[label].append(obj)
        for label, objects in found.items():
            if len(objects) > 1:
                raise DomainError(f"{self.where} holds {len(objects)} objects labelled {label!r}")
        wrap, owner, seal = (
            found[DOMAIN_WRAP_LABEL],
            found[DOMAIN_OWNER_LABEL],
            found[DOMAIN_SEAL_LABEL],
        )
        return _DomainKeys(
            wrap[0] if wrap else None, owner[0] if owner else None, seal[0] if seal else None
        )

    def _find_one(self, object_class: ObjectClass, label: str) -> Any | None:
        found = list(self._token_objects({A.CLASS: object_class, A.LABEL: label}))
        if len(found) > 1:
            raise DomainError(f"{self.where} holds {len(found)} objects labelled {label!r}")
        return found[0] if found else None

    def _domain_objects(self) -> list[Any | None]:
        """The domain's keys and marker, each searched for by its label."""
        self._domain_keys = None
        return [
            *(self._find_one(ObjectClass.SECRET_KEY, label) for label in sorted(DOMAIN_LABELS)),
            self._find_one(ObjectClass.DATA, DOMAIN_MARKER_LABEL),
        ]

    def _keys(self) -> _DomainKeys:
        """The domain keys, found once both the wrap and the owner key are there.

        Handles stay valid while the session lasts, and this session's own import and
        removal of a domain refresh them. An absent domain is looked for again each time
        (another process may recover one).
        """
        if self._domain_keys is not None:
            return self._domain_keys
        keys = self._find_domain_keys()
        if keys.wrap is not None and keys.owner is not None:
            self._domain_keys = keys
        return keys

    def domain_keys(self) -> tuple[Any | None, Any | None]:
        """The domain's wrap key and owner key (None where absent)."""
        keys = self._keys()
        return keys.wrap, keys.owner

    def domain_hierarchy(self) -> int | None:
        """The key hierarchy of the slot's domain (see :mod:`sealkeep.hsm_keys`), or None."""
        keys = self._keys()
        if keys.wrap is None or keys.owner is None:
            return None
        return HIERARCHY_PER_PURPOSE if keys.seal is not None else HIERARCHY_SHARED_KEK

    def domain_id(self) -> bytes | None:
        """The id of the backup domain this slot holds (computed in the HSM), or None."""
        wrap_key, owner_key = self.domain_keys()
        if wrap_key is None or owner_key is None:
            return None
        return self._hmac(owner_key, DOMAIN_ID_INFO)[:DOMAIN_ID_LEN]

    def require_domain(self) -> bytes:
        """The domain id; raises :class:`DomainError` when the slot holds no domain."""
        domain = self.domain_id()
        if domain is None:
            raise DomainError(
                f"{self.where} holds no backup domain key: create a domain there, or "
                "recover one into it from the custodians' drives"
            )
        return domain

    def owner_hmac(self, message: bytes) -> bytes:
        """``HMAC-SHA256(owner root, message)``, computed in the HSM."""
        return self._hmac(self._owner_key(), message)

    def _hmac(self, owner_key: Any, message: bytes) -> bytes:
        try:
            raw = self.hsm.raw()
            if raw is not None:  # by handle: a listed key's python-pkcs11 view costs a search
                session, key = int(self.session.handle), int(owner_key.handle)
                return raw.sign(session, Mechanism.SHA256_HMAC, key, message)
            return bytes(owner_key.sign(message, mechanism=Mechanism.SHA256_HMAC))
        except PKCS11Error as exc:
            raise DomainError(
                f"the domain owner key of {self.where} cannot compute an HMAC: {exc!r}"
            ) from None

    def unwrap_sessions(self, profile: Profile, count: int) -> UnwrapSessions | None:
        """``count`` more sessions on this slot for a restore's unwraps, or None where the
        module cannot be called from several threads (or grants no more sessions)."""
        raw = self.hsm.raw()
        if raw is None or not self.hsm.thread_safe or count < 1:
            return None
        pool = UnwrapSessions(raw, self.slot_id, profile, count)
        return pool if pool.usable else None

    def _direct(self) -> RawModule:
        raw = self.hsm.raw()
        if raw is None:
            raise DomainError(
                f"sealkeep cannot call {self.hsm.module} directly, which key templates need"
            )
        return raw

    def traits(self) -> TokenTraits:
        """Which protective attributes this token takes (asked once per session)."""
        if self._traits is None:
            try:
                self._traits = detect_traits(self._direct(), int(self.session.handle))
            except PKCS11Error as exc:
                raise DomainError(f"cannot check what {self.where} accepts: {exc}") from None
        return self._traits

    def probe_protections(self, profile: Profile = STANDARD) -> list[str]:
        """What the token does not enforce of the key hierarchy, in plain sentences.

        Raises :class:`DomainError` when it lacks what the hierarchy cannot do without.
        """
        try:
            return probe_protections(
                self._direct(), int(self.session.handle), self.session, profile, self.traits()
            )
        except PKCS11Error as exc:
            raise DomainError(f"cannot check what {self.where} enforces: {exc}") from None

    def choose_profile(self, wanted: Profile | None = None) -> Profile:
        """The profile a domain made here follows (see :func:`~sealkeep.hsm_caps.choose_profile`):
        ``wanted``, or the first the token can do, each tried with throwaway objects."""
        return choose_profile(self.session, self.where, wanted)

    def possible_profiles(self) -> list[Profile]:
        """Every profile a domain in this token could follow (tried, nothing stored)."""
        return possible_profiles(self.session)

    def require_capabilities(self, profile: Profile = STANDARD) -> None:
        """Raise :class:`~sealkeep.hsm_caps.MechanismMissing` unless the token can do every
        mechanism ``profile`` needs (tried with throwaway objects, nothing stored)."""
        require_capabilities(self.session, self.where, profile)

    def require_mechanisms(self, doing: str, profile: Profile | None = None) -> None:
        """Raise :class:`~sealkeep.hsm_caps.MechanismMissing`, after ``doing`` (what cannot be
        done), when the token does not list a mechanism every set of ``profile`` (by
        default the slot's domain's) needs."""
        profile = profile or self.domain_profile()
        require_mechanisms(self.session.token.slot, doing, profile.needs)

    def wrap_check_profile(self) -> Profile:
        """The profile whose wrap mechanism ``keys`` and a backup try keys with: the domain's,
        or, in a slot without one, the first whose mechanisms the token lists."""
        if self._domain_keys is not None or (
            self._find_one(ObjectClass.DATA, DOMAIN_MARKER_LABEL) is not None
        ):  # a session that found the domain's keys knows its profile without a search
            return self.domain_profile()
        for profile in PROFILES.values():
            try:
                require_mechanisms(self.session.token.slot, "", profile.needs)
            except MechanismMissing:
                continue
            return profile
        return STANDARD

    def domain_profile(self) -> Profile:
        """The profile of the slot's domain, from its marker (``standard`` when it has none);
        read once while the session knows the domain's keys."""
        if self._profile is not None and self._domain_keys is not None:
            return self._profile
        marker = self._find_one(ObjectClass.DATA, DOMAIN_MARKER_LABEL)
        parsed = parse_marker(marker[A.VALUE]) if marker is not None else None
        number = parsed[2] if parsed is not None else STANDARD.number
        profile = PROFILES.get(number)
        if profile is None:
            raise DomainError(
                f"the domain in {self.where} uses profile {number}, which this sealkeep does "
                "not know: use a newer sealkeep"
            )
        self._profile = profile if self._keys().wrap is not None else None
        return profile

    def import_domain(
        self,
        secret: bytes | bytearray,
        hierarchy: int = HIERARCHY_PER_PURPOSE,
        profile: Profile = STANDARD,
    ) -> bytes:
        """Store the domain secret as non-extractable token objects; returns the domain id.

        ``hierarchy`` is :data:`HIERARCHY_PER_PURPOSE` but for tests, which make the
        domains older versions made. ``profile`` is recorded in the marker and shapes the
        seal key's unwrap template. Refuses a slot that already holds a domain
        (:class:`DomainError`). Nothing is left behind if any step fails.
        """
        expected = domain_id_from_secret(secret)
        existing = self.domain_id()
        if existing is not None:
            same = " (the same domain)" if existing == expected else ""
            raise DomainError(f"{self.where} already holds backup domain {existing.hex()}{same}")
        # Leftovers of an interrupted import (a marker or one key alone) are cleared first.
        self.remove_domain()
        created: list[Any] = []
        try:
            wrap_key, seal_key, owner_key = self._create_domain_keys(
                secret, hierarchy, created, profile
            )
            computed = self._hmac(owner_key, DOMAIN_ID_INFO)[:DOMAIN_ID_LEN]
            if computed != expected:
                raise DomainError(
                    f"{self.where} computes HMAC-SHA256 differently from the standard: "
                    "the domain cannot be used there"
                )
            marker = marker_value(expected, hierarchy, profile)
            created.append(
                self.session.create_object(
                    {
                        A.CLASS: ObjectClass.DATA,
                        A.TOKEN: True,
                        A.PRIVATE: False,
                        A.LABEL: DOMAIN_MARKER_LABEL,
                        A.APPLICATION: DOMAIN_APPLICATION,
                        A.VALUE: marker,
                    }
                )
            )
        except PKCS11Error as exc:
            self._destroy_all(created)
            raise DomainError(f"cannot store the domain key in {self.where}: {exc!r}") from None
        except BaseException:
            self._destroy_all(created)
            raise
        self._domain_keys = _DomainKeys(wrap_key, owner_key, seal_key)
        self._profile = profile
        return expected

    @staticmethod
    def _destroy_all(objects: Iterable[Any]) -> None:
        for obj in objects:
            with suppress(PKCS11Error):
                obj.destroy()

    def _create_domain_keys(
        self,
        secret: bytes | bytearray,
        hierarchy: int,
        created: list[Any],
        profile: Profile = STANDARD,
    ) -> tuple[Any, Any | None, Any]:
        """(wrap key, seal key or None, owner key), each appended to ``created`` as made.

        Every value goes to ``C_CreateObject`` straight from :class:`DomainKeyValues`' buffer
        or a view into ``secret``: python-pkcs11 would pack each into a bytes object first.
        """
        domain_id = domain_id_from_secret(secret)
        raw = self._direct()
        handle = int(self.session.handle)

        traits = self.traits()

        def create(label: str, key_type: KeyType, template: RawTemplate) -> Any:
            made = raw.create_object(handle, traits.fit(template))
            found = {A.TOKEN: True, A.CLASS: ObjectClass.SECRET_KEY, A.LABEL: label}
            created.append(_ListedObject(self.session, made, {**found, A.ID: domain_id}))
            return created[-1]

        with DomainKeyValues(secret, hierarchy) as values:
            if values.seal is None:
                wrap_key = create(
                    DOMAIN_WRAP_LABEL,
                    KeyType.AES,
                    hierarchy_1_wrap_key_template(DOMAIN_WRAP_LABEL, domain_id, values.wrap),
                )
                seal_key = None
            else:
                wrap_key, seal_key = (
                    create(label, KeyType.AES, domain_key_template(label, domain_id, value, forced))
                    for label, value, forced in (
                        (DOMAIN_WRAP_LABEL, values.wrap, SET_KEY_TEMPLATE),
                        (
                            DOMAIN_SEAL_LABEL,
                            values.seal,
                            PORTABLE_SEALED_TEMPLATE
                            if profile is PORTABLE
                            else MANIFEST_KEY_TEMPLATE,
                        ),
                    )
                )
            owner_key = create(
                DOMAIN_OWNER_LABEL,
                KeyType.GENERIC_SECRET,
                owner_key_template(
                    DOMAIN_OWNER_LABEL,
                    domain_id,
                    values.owner_root,
                    copyable=hierarchy == HIERARCHY_SHARED_KEK,
                ),
            )
        return wrap_key, seal_key, owner_key

    def remove_domain(self) -> None:
        """Destroy the domain objects of this slot (for re-import or tests)."""
        for obj in self._domain_objects():
            if obj is not None:
                try:
                    obj.destroy()
                except PKCS11Error as exc:
                    raise DomainError(
                        f"cannot remove the domain objects of {self.where}: {exc!r}"
                    ) from None
        self._domain_keys = None

    def owner_credential(self, serial: str) -> bytes:
        """``HMAC-SHA256(owner root, "sealkeep owner key" ‖ serial)``, computed in the HSM."""
        return self._hmac(self._owner_key(), OWNER_KEY_INFO + serial.encode())

    def _owner_key(self) -> Any:
        wrap_key, owner_key = self.domain_keys()
        if wrap_key is None or owner_key is None:
            self.require_domain()
        return owner_key

    def _wrap_key(self) -> Any:
        wrap_key, owner_key = self.domain_keys()
        if wrap_key is None or owner_key is None:
            self.require_domain()
        return wrap_key
