"""A slot's set keys: made for a backup, opened for a restore or a verify, carried over by a
re-share. :class:`SetKeys` is a part of :class:`sealkeep.hsm.HsmSession`, kept here for size;
the keys themselves and their templates are :mod:`sealkeep.hsm_keys`.
"""

from __future__ import annotations

from typing import Any

from pkcs11 import KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import PKCS11Error

from .hsm_base import (
    WRAP_MECHANISM,
    A,
    DomainError,
    HsmError,
    SetKeyError,
    _ListedObject,
)
from .hsm_caps import PROFILES, STANDARD, MechanismMissing, Profile, mechanism_failure
from .hsm_keys import (
    DomainKeyValues,
    SessionKeys,
    SetCarrier,
    SetKey,
    SetKeyFormatError,
    TokenTraits,
)
from .hsm_raw import RawModule
from .manifest import SetHeader


class SetKeys:
    """Set keys in a slot's session (a part of HsmSession, which gives what is declared here)."""

    session: Any

    @property
    def where(self) -> str:
        raise NotImplementedError

    def _keys(self) -> Any:
        raise NotImplementedError

    def _wrap_key(self) -> Any:
        raise NotImplementedError

    def _direct(self) -> RawModule:
        raise NotImplementedError

    def traits(self) -> TokenTraits:
        raise NotImplementedError

    def domain_profile(self) -> Profile:
        raise NotImplementedError

    def domain_hierarchy(self) -> int | None:
        raise NotImplementedError

    def require_domain(self) -> bytes:
        raise NotImplementedError

    def require_mechanisms(self, doing: str, profile: Profile | None = None) -> None:
        raise NotImplementedError

    # The KEK of a set of hierarchy 1 (which sealkeep still opens and makes in slots that
    # hold a domain of that hierarchy, until a re-share replaces it).
    _SHARED_KEK_CAPABILITIES = (
        MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
    )

    def _session_keys(self, profile: Profile | None = None) -> SessionKeys:
        return SessionKeys(
            self._direct(),
            int(self.session.handle),
            self._resolve_session_key,
            profile or self.domain_profile(),
            self.traits(),
        )

    def _resolve_session_key(self, handle: int, label: str, key_id: bytes) -> Any:
        template = {A.TOKEN: False, A.CLASS: ObjectClass.SECRET_KEY, A.LABEL: label, A.ID: key_id}
        return _ListedObject(self.session, handle, template)

    def new_set_key(self) -> SetKey:
        """Fresh keys for a set (session objects), and their values wrapped by the domain,
        with the mechanisms of the domain's profile."""
        wrap_key, seal_key = self._wrap_key(), self._keys().seal
        profile = self.domain_profile()
        try:
            if seal_key is None:
                return self._new_shared_kek(wrap_key)
            keys = self._session_keys(profile)
            return keys.generate(int(wrap_key.handle), int(seal_key.handle))
        except PKCS11Error as exc:
            doing = f"cannot make a set key in {self.where}"
            needs = [n for n in profile.needs if n.mechanism != Mechanism.SHA256_HMAC]
            missing = mechanism_failure(exc, self.session.token.slot, doing, needs)
            raise missing or HsmError(f"{doing}: {exc!r}") from None

    def _new_shared_kek(self, wrap_key: Any) -> SetKey:
        kek = self.session.generate_key(
            KeyType.AES,
            256,
            store=False,
            capabilities=self._SHARED_KEK_CAPABILITIES,
            template={A.SENSITIVE: True, A.EXTRACTABLE: True, A.PRIVATE: True},
        )
        return SetKey(kek, bytes(wrap_key.wrap_key(kek, mechanism=WRAP_MECHANISM)))

    def open_set_key(
        self,
        wrapped: bytes,
        wrapped_manifest_key: bytes | None = None,
        wrapped_mac_key: bytes | None = None,
        profile: Profile = STANDARD,
    ) -> SetKey:
        """Unwrap a set's keys with this slot's domain keys (as session objects), with the
        mechanisms of the set's own ``profile`` (its header says which)."""
        wrap_key, seal_key = self._wrap_key(), self._keys().seal
        if (seal_key is None) != (wrapped_manifest_key is None):
            raise SetKeyError(self._hierarchy_mismatch(seal_key is None))
        # A set names the mechanisms it needs; a token without them cannot open it, which
        # says nothing of the set.
        self.require_mechanisms(
            f"cannot open the keys of a set of the {profile.name} profile in {self.where}",
            profile,
        )
        try:
            if seal_key is None or wrapped_manifest_key is None:
                kek = wrap_key.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    wrapped,
                    mechanism=WRAP_MECHANISM,
                    store=False,
                    capabilities=self._SHARED_KEK_CAPABILITIES,
                    template={A.SENSITIVE: True, A.EXTRACTABLE: False, A.PRIVATE: True},
                )
                return SetKey(kek, bytes(wrapped))
            return self._session_keys(profile).open(
                int(wrap_key.handle),
                int(seal_key.handle),
                wrapped,
                wrapped_manifest_key,
                wrapped_mac_key,
            )
        except SetKeyFormatError as exc:
            raise SetKeyError(f"the set's header is malformed: {exc}") from None
        except PKCS11Error as exc:
            doing = f"cannot open the set's keys in {self.where}"
            # Opening only unwraps: the profile's wrap mechanism is the one at fault.
            needs = [n for n in profile.needs if n.mechanism == profile.wrap_mechanism]
            missing = mechanism_failure(exc, self.session.token.slot, doing, needs)
            if missing is not None:
                raise missing from None
            # SoftHSM2 reports a failed integrity check of AES key wrap as GeneralError.
            raise SetKeyError(
                f"the set key does not unwrap with the domain key of {self.where}: the set "
                "belongs to another backup domain, or its wrapped key is corrupt"
            ) from None

    def open_set(self, header: SetHeader) -> SetKey:
        """The keys of the set ``header`` heads, opened with the mechanisms it names."""
        profile = PROFILES.get(header.profile)
        if profile is None:
            raise MechanismMissing(
                f"set {header.set_id_hex} uses profile {header.profile}, which this sealkeep "
                "does not know: nothing on the drives is corrupt; open it with a newer sealkeep"
            )
        return self.open_set_key(
            header.wrapped_kek, header.wrapped_manifest_key, header.wrapped_mac_key, profile
        )

    def set_carrier(
        self, old_secret: bytes | bytearray, new_secret: bytes | bytearray
    ) -> SetCarrier:
        """What moves this slot's sets to the domain of ``new_secret`` (see :class:`SetCarrier`).

        ``old_secret`` is the secret of the domain the slot holds now. Close it after use.
        """
        hierarchy = self.domain_hierarchy()
        if hierarchy is None:
            self.require_domain()
            raise AssertionError("unreachable")
        try:
            with (
                DomainKeyValues(old_secret, hierarchy) as old,
                DomainKeyValues(new_secret) as new,
            ):
                return SetCarrier(self._session_keys(self.domain_profile()), old, new)
        except PKCS11Error as exc:
            raise DomainError(f"cannot load the domain keys into {self.where}: {exc!r}") from None

    def _hierarchy_mismatch(self, slot_is_old: bool) -> str:
        if slot_is_old:
            return (
                f"the set was made under the current key hierarchy and {self.where} holds its "
                "domain under the old one: re-share the domain (`sealkeep domain reshare`), "
                "which upgrades the slot, then restore"
            )
        return (
            f"the set was made under the old key hierarchy, which the domain in {self.where} "
            "no longer opens: a re-share of the domain (`sealkeep domain reshare`) carries "
            "the sets it finds on the drives over to the current one"
        )
