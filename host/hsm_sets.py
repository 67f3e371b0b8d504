"""What a backup set holds, on the HSM side: wrapping a slot's keys into entries, and
recreating entries in a slot, each proven by use.

:class:`SetContents` is a part of :class:`sealkeep.hsm.HsmSession`, kept here for size.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from pkcs11 import (
    DEFAULT,
    Attribute,
    KeyType,
    MechanismFlag,
    ObjectClass,
)
from pkcs11.attributes import AttributeMapper
from pkcs11.exceptions import (
    AttributeReadOnly,
    AttributeTypeInvalid,
    AttributeValueInvalid,
    PKCS11Error,
)

from .hsm_base import (
    _CAPABILITY_FLAGS,
    A,
    ObjectInfo,
    Proof,
    RestoreOutcome,
    _bool,
    _error_name,
    _ident,
    _ListedObject,
    attributes_not_taken,
    replay_template,
)
from .hsm_caps import Profile, is_mechanism_error, mechanism_name
from .hsm_keys import (
    SetKey,
    Wrapping,
)
from .hsm_proof import (
    _prove,
)
from .hsm_raw import TEMPLATE_REFUSALS, HsmCallError, RawTemplate
from .hsm_unwrap_pool import RESTORE_SESSIONS, UnwrapSessions
from .manifest import Attributes, KeyEntry, SkippedEntry

# SENSITIVE is made true on purpose (a restored key is never more readable than it left).
_NOT_COMPARED = frozenset({int(A.SENSITIVE)})
_TEMPLATE_REFUSALS = (AttributeReadOnly, AttributeTypeInvalid, AttributeValueInvalid)
# What no restored key goes without: left out, the key would be another or more readable.
_NEVER_LEFT_OUT = frozenset({A.CLASS, A.KEY_TYPE, A.TOKEN, A.SENSITIVE, A.LABEL, A.ID})


def _refuses_template(exc: Exception) -> bool:
    """Whether the token refused an attribute of a template (by either way of calling)."""
    if isinstance(exc, HsmCallError):
        return exc.rv in TEMPLATE_REFUSALS
    return isinstance(exc, _TEMPLATE_REFUSALS)


class _RestoredKey(_ListedObject):
    """A secret key a restore unwrapped by a direct call, known by its handle.

    python-pkcs11 would read ten attributes of each new key and make a Python class for it
    (~0.25 ms per key on SoftHSM2) that the restore never uses: the proofs, the read-back,
    making it sensitive and destroying it go by direct calls on the handle.
    """

    def __init__(
        self,
        session: Any,
        handle: int,
        template: dict[Attribute, Any],
        direct: Wrapping,
        mapper: AttributeMapper,
    ) -> None:
        super().__init__(session, handle, template)
        self._direct = direct
        self._mapper = mapper

    def __setitem__(self, key: Attribute, value: Any) -> None:
        packed = {int(key): self._mapper.pack_attribute(key, value)}
        self._direct.raw.set_attributes(self._direct.session, self._handle, packed)

    def destroy(self) -> None:
        self._direct.raw.destroy_object(self._direct.session, self._handle)


@dataclass
class _Plan:
    """An entry a restore is to make: its status once made, the object it replaces."""

    entry: KeyEntry
    ident: tuple[int, str, bytes]
    status: str  # "restored" or "replaced"
    existing: Any | None
    public: Attributes | None
    made: Future[_Made] | None = None  # where a worker makes it


@dataclass
class _Made:
    """An object a restore made, checked and proven; ``obj`` None where it was not made or
    was removed again (``failure`` says why)."""

    obj: Any | None
    failure: str = ""
    proof: Proof | None = None
    not_taken: tuple[str, ...] = ()


def _outcome(
    entry: KeyEntry, status: str, detail: str = "", proof: Proof | None = None
) -> RestoreOutcome:
    return RestoreOutcome(
        entry.object_class, entry.key_type, entry.label, entry.id, status, detail, proof
    )


def _unwraps_directly(kek: SetKey, entry: KeyEntry) -> bool:
    """Whether the entry is a secret key unwrapped by a direct call (what workers do)."""
    return (
        kek.direct is not None
        and entry.object_class == ObjectClass.SECRET_KEY
        and entry.wrapped is not None
        and entry.key_type is not None
    )


def _discard(plan: _Plan) -> None:
    """Destroy the key the workers made for a plan the restore did not get to report."""
    if plan.made is None or not plan.made.done() or plan.made.cancelled():
        return
    made = plan.made.result() if plan.made.exception() is None else None
    if made is not None and made.obj is not None:
        with suppress(PKCS11Error):
            made.obj.destroy()


def _known_attribute(kind: int) -> bool:
    try:
        Attribute(kind)
    except ValueError:
        return False
    return True


class SetContents:
    """Backup and restore of a slot's objects under a set's keys (a part of HsmSession)."""

    session: Any
    slot_id: int
    _mapper: AttributeMapper
    _refused_attributes: dict[tuple[int, int], Attribute]

    def objects(self) -> list[ObjectInfo]:
        raise NotImplementedError

    def unwrap_sessions(self, profile: Profile, count: int) -> UnwrapSessions | None:
        raise NotImplementedError

    def present_keys(self) -> set[tuple[int, str, bytes]]:
        raise NotImplementedError

    def wrap_check_profile(self) -> Profile:
        raise NotImplementedError

    def read_attributes(
        self, obj: Any, attributes: Sequence[Attribute], session: int | None = None
    ) -> Attributes:
        raise NotImplementedError

    # -- backup ----------------------------------------------------------------------------

    def backup_entries(
        self,
        kek: SetKey,
        objects: Iterable[ObjectInfo] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[KeyEntry], list[SkippedEntry]]:
        """Wrap every exportable key under ``kek``: the manifest entries, and what was skipped.

        Public keys and certificates are entries without a wrapped value. Nothing is skipped
        silently: every object left out is a :class:`SkippedEntry` with its reason, except the
        backup domain's own keys, which the custodians' shares keep.
        """
        items = list(self.objects() if objects is None else objects)
        entries: list[KeyEntry] = []
        skipped: list[SkippedEntry] = []
        for done, item in enumerate(items, 1):
            if item.is_domain_key:
                pass
            elif not item.exportable:
                skipped.append(
                    SkippedEntry(
                        item.object_class, item.label, item.id, item.reason or "", item.refused
                    )
                )
            elif item.needs_wrap:
                try:
                    entries.append(KeyEntry(item.attributes, kek.wrap(item.handle)))
                except PKCS11Error as exc:
                    skipped.append(
                        SkippedEntry(
                            item.object_class,
                            item.label,
                            item.id,
                            f"the HSM refused to wrap it ({_error_name(exc)})",
                            refused=True,
                        )
                    )
            else:
                entries.append(KeyEntry(item.attributes, None))
            if progress is not None:
                progress(done, len(items))
        return entries, skipped

    def check_wrapping(self, objects: Sequence[ObjectInfo]) -> list[ObjectInfo]:
        """``objects``, with those the token will not wrap marked so (not exportable, refused).

        The token is asked, not guessed at: one key of each class and type is wrapped under a
        throwaway session key (sensitive, never extractable, destroyed at once) with the
        mechanism a set uses. SoftHSM2, for one, marks Ed25519 keys extractable and refuses
        to wrap them.
        """
        verdicts: dict[tuple[int, int | None], str | None] = {}
        candidates = [o for o in objects if o.exportable and o.needs_wrap and not o.is_domain_key]
        if not candidates:
            return list(objects)
        candidate_ids = {id(o) for o in candidates}
        profile = self.wrap_check_profile()
        mechanism = profile.wrap_mechanism
        parameter = {"mechanism_param": bytes(profile.iv_len)} if profile.iv_len else {}
        throwaway = self.session.generate_key(
            KeyType.AES,
            256,
            store=False,
            capabilities=MechanismFlag.WRAP,
            template={A.SENSITIVE: True, A.EXTRACTABLE: False, A.LABEL: "sealkeep-wrap-check"},
        )
        try:
            for item in candidates:
                kind = (item.object_class, item.key_type)
                if kind in verdicts:
                    continue
                try:
                    throwaway.wrap_key(item.handle, mechanism=mechanism, **parameter)
                    verdicts[kind] = None
                except PKCS11Error as exc:
                    verdicts[kind] = (
                        f"the HSM lacks {mechanism_name(mechanism)}, which wraps every "
                        f"key of a set of the {profile.name} profile"
                        if is_mechanism_error(exc)
                        else f"the HSM will not wrap a {item.type_name} {item.class_name} "
                        f"({_error_name(exc)})"
                    )
        finally:
            with suppress(PKCS11Error):
                throwaway.destroy()
        if all(refusal is None for refusal in verdicts.values()):
            return list(objects)  # the usual case: nothing to mark, no second pass
        checked = []
        for item in objects:
            refusal = verdicts.get((item.object_class, item.key_type))
            if id(item) in candidate_ids and refusal is not None:
                item = replace(item, exportable=False, reason=refusal, refused=True)
            checked.append(item)
        return checked

    # -- restore ---------------------------------------------------------------------------

    def restore(
        self,
        kek: SetKey,
        entries: Sequence[KeyEntry],
        *,
        labels: Collection[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        replace: bool = False,
        dry_run: bool = False,
        present: set[tuple[int, str, bytes]] | None = None,
        sessions: int = RESTORE_SESSIONS,
    ) -> list[RestoreOutcome]:
        """Recreate the entries (or those whose label is in ``labels``) in this slot.

        Secret and private keys are unwrapped with their attributes replayed; public keys and
        certificates are recreated from their attributes. Each restored object is proven by
        use (see :meth:`prove`). An object whose class, label and id are already in the slot
        is compared with the set by the same proofs: ``"present"`` when it is the same (or
        nothing can tell them apart: the detail says so), ``"different"`` when its material
        is another; with ``replace`` a different one is destroyed and the set's restored in
        its place (``"replaced"``). With ``dry_run`` nothing is created or destroyed: what
        would be is ``"would restore"`` or ``"would replace"``. ``present`` is
        :meth:`present_keys` where the caller listed the slot already (it is added to).
        Secret keys are unwrapped in up to ``sessions`` sessions at once where the module
        allows threads (see :mod:`sealkeep.hsm_unwrap_pool`); the outcomes are the same.
        """
        present = self.present_keys() if present is None else present
        publics = {
            (entry.key_type, entry.id): entry.attributes
            for entry in entries
            if entry.object_class == ObjectClass.PUBLIC_KEY
        }
        chosen = [e for e in entries if labels is None or e.label in labels]
        # Keys first, then the public objects that go with them.
        chosen.sort(
            key=lambda e: e.object_class not in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
        )
        outcomes: list[RestoreOutcome] = []

        def report(outcome: RestoreOutcome) -> None:
            outcomes.append(outcome)
            if progress is not None:
                progress(len(outcomes), len(chosen))

        # What the workers would make: secret keys under names the slot does not hold yet.
        pooled = sum(
            1 for e in chosen if _unwraps_directly(kek, e) and _ident(e.attributes) not in present
        )
        pool = None
        if not dry_run and sessions > 1 and pooled > 1:
            pool = self.unwrap_sessions(kek.profile, min(sessions, pooled))
        if pool is None:
            for entry in chosen:
                report(self._restore_one(kek, entry, present, publics, replace, dry_run))
            return outcomes
        with pool:
            self._refusals()  # made here, not raced for by the workers
            steps: list[_Plan | KeyEntry] = []
            try:
                self._plan(kek, chosen, present, publics, pool, steps)
                for step in steps:
                    if isinstance(step, _Plan):
                        report(self._settle(kek, step, present))
                    else:  # as it would be alone, now that those before it are settled
                        report(self._restore_one(kek, step, present, publics, replace, dry_run))
            except BaseException:
                pool.close()  # no more unwraps: what is made and not reported is removed
                for step in steps[len(outcomes) :]:
                    if isinstance(step, _Plan):
                        _discard(step)
                raise
        return outcomes

    def _plan(
        self,
        kek: SetKey,
        chosen: Sequence[KeyEntry],
        present: set[tuple[int, str, bytes]],
        publics: dict[tuple[int | None, bytes], Attributes],
        pool: UnwrapSessions,
        steps: list[_Plan | KeyEntry],
    ) -> None:
        """Each entry's step into ``steps``, in order: a plan whose key the pool is
        unwrapping, or the entry itself, restored in its turn as it would be alone (what the
        pool does not unwrap, a name the slot holds already, which is compared then, and a
        second entry under a name another one of the set takes)."""
        claimed: set[tuple[int, str, bytes]] = set()
        for entry in chosen:
            ident = _ident(entry.attributes)
            if ident in claimed or ident in present or not _unwraps_directly(kek, entry):
                steps.append(entry)
                continue
            claimed.add(ident)
            plan = _Plan(entry, ident, "restored", None, publics.get((entry.key_type, entry.id)))
            plan.made = pool.submit(partial(self._make_checked, kek, entry, plan.public))
            steps.append(plan)

    def _restore_one(
        self,
        kek: SetKey,
        entry: KeyEntry,
        present: set[tuple[int, str, bytes]],
        publics: dict[tuple[int | None, bytes], Attributes],
        replace: bool = False,
        dry_run: bool = False,
    ) -> RestoreOutcome:
        step = self._prepare(kek, entry, present, publics, replace, dry_run)
        if isinstance(step, RestoreOutcome):
            return step
        return self._settle(kek, step, present)

    def _prepare(
        self,
        kek: SetKey,
        entry: KeyEntry,
        present: set[tuple[int, str, bytes]],
        publics: dict[tuple[int | None, bytes], Attributes],
        replace: bool,
        dry_run: bool,
    ) -> RestoreOutcome | _Plan:
        """What becomes of the entry before anything is made: an outcome (present,
        different, a dry run's), or the plan to make it."""
        ident = _ident(entry.attributes)
        public = publics.get((entry.key_type, entry.id))
        status = "restored"
        if ident in present:
            existing = self._present_object(entry)
            verdict, detail = self._compare(existing, entry, kek, public)
            if verdict != "different":
                return _outcome(entry, "present", detail)
            if not replace:
                return _outcome(
                    entry,
                    "different",
                    f"the slot holds another object with this class, label and id ({detail}); "
                    "restore with --replace to put the set's in its place",
                )
            if dry_run:
                return _outcome(entry, "would replace", detail)
            status = "replaced"
        else:
            existing = None
        if dry_run:
            present.add(ident)
            return _outcome(entry, "would restore")
        return _Plan(entry, ident, status, existing, public)

    def _settle(
        self, kek: SetKey, plan: _Plan, present: set[tuple[int, str, bytes]]
    ) -> RestoreOutcome:
        """The planned object made, checked and proven (or taken as a worker made it), then
        kept, removed, or put in place of the one it replaces."""
        entry, ident, existing = plan.entry, plan.ident, plan.existing
        if plan.made is None:
            made = self._make_checked(kek, entry, plan.public)
        else:
            made = plan.made.result()
        if made.obj is None or made.proof is None:
            return _outcome(entry, "failed", made.failure)
        obj, proof = made.obj, made.proof
        present.add(ident)
        if existing is None and not proof.ok and proof.method not in ("none", "error"):
            # A check told it apart from the set's key: it does not stay under the set's
            # label, where applications would take it for the original.
            try:
                obj.destroy()
                fate = "the key the HSM made was removed"
            except PKCS11Error as exc:
                fate = f"removing the key the HSM made failed ({_error_name(exc)}): delete it"
            else:
                present.discard(ident)
            return _outcome(
                entry, "failed", f"its proof failed ({proof.method}: {proof.detail}); {fate}", proof
            )
        if existing is not None:
            # The other object goes only once the set's stands proven beside it: a replace
            # that fails halfway leaves the slot as it was.
            if not proof.ok:
                with suppress(PKCS11Error):
                    obj.destroy()
                return _outcome(
                    entry,
                    "different",
                    f"not replaced: the set's copy is not proven ({proof.detail})",
                )
            try:
                existing.destroy()
            except PKCS11Error as exc:
                with suppress(PKCS11Error):
                    obj.destroy()
                return _outcome(entry, "different", f"it cannot be replaced ({_error_name(exc)})")
        return RestoreOutcome(
            entry.object_class,
            entry.key_type,
            entry.label,
            entry.id,
            plan.status,
            proof=proof,
            not_taken=made.not_taken,
        )

    def _make_checked(
        self,
        kek: SetKey,
        entry: KeyEntry,
        public: Attributes | None,
        via: Wrapping | None = None,
    ) -> _Made:
        """The entry made in the slot, read back, made sensitive where it is a key, and
        proven: every call in ``via``'s session where given (a restore's worker: each has a
        session of its own), else in this one. A key that cannot stay is removed again."""
        try:
            obj = self._recreate(kek, entry, via)
        except (PKCS11Error, ValueError) as exc:
            return _Made(None, f"the HSM refused to recreate it ({_error_name(exc)})")
        recorded = {k: v for k, v in entry.attributes.items() if k not in _NOT_COMPARED}
        kinds = [Attribute(k) for k in sorted(recorded) if _known_attribute(k)]
        session = via.session if via is not None else None
        now = self.read_attributes(obj, [*kinds, A.SENSITIVE], session)  # both checks
        if entry.object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
            refusal = self._keep_sensitive(obj, now, via)
            if refusal is not None:
                with suppress(PKCS11Error):
                    if via is None:
                        obj.destroy()
                    else:
                        via.raw.destroy_object(via.session, int(obj.handle))
                return _Made(None, refusal)
        proof = self.prove(obj, entry, kek, public, via=via)
        return _Made(obj, "", proof, attributes_not_taken(recorded, now))

    def _keep_sensitive(
        self, obj: Any, read: Attributes, via: Wrapping | None = None
    ) -> str | None:
        """Make sure a restored key is sensitive (None), else say why it cannot stay;
        ``read`` is what was read of it as it was made.

        Its template asks for it, but a token may take the attribute and ignore it
        (openCryptoki 3.8 does in C_UnwrapKey): then it is set afterwards, and a key the
        token leaves readable is not kept, since anyone with the PIN could read it.
        """
        if _bool(read, A.SENSITIVE) is True:
            return None
        try:
            if via is None:
                obj[A.SENSITIVE] = True
            else:
                packed = {int(A.SENSITIVE): self._mapper.pack_attribute(A.SENSITIVE, True)}
                via.raw.set_attributes(via.session, int(obj.handle), packed)
        except PKCS11Error as exc:
            detail = _error_name(exc)
        else:
            session = via.session if via is not None else None
            if _bool(self.read_attributes(obj, [A.SENSITIVE], session), A.SENSITIVE) is True:
                return None
            detail = "it reads back not sensitive"
        return (
            f"not restored: the HSM would not make it sensitive ({detail}), so anyone with "
            "the PIN could read its value; restore it into a token that keeps keys sensitive"
        )

    def _present_object(self, entry: KeyEntry) -> Any:
        """The token object with the entry's class, label and id (the first, if several)."""
        template: dict[Attribute, Any] = {
            A.TOKEN: True,
            A.CLASS: ObjectClass(entry.object_class),
            A.LABEL: entry.label,
        }
        if entry.id:
            template[A.ID] = entry.id
        for obj in self.session.get_objects(template):
            return obj
        return None

    def _compare(
        self, existing: Any, entry: KeyEntry, kek: SetKey, public: Attributes | None
    ) -> tuple[str, str]:
        """("same" | "different" | "unknown", why): the present object against the entry,
        by the proofs a restore makes; only those that tell two keys apart count (an AES
        key encrypting and decrypting its own data says nothing about which key it is)."""
        if existing is None:
            return "unknown", "an object of that class, label and id is in the slot"
        proof = self.prove(existing, entry, kek, public)
        if not proof.ok and proof.method not in ("none", "error"):
            return "different", proof.detail
        telling = set(proof.method.split(" + ")) - {"none", "error"}
        if entry.key_type == KeyType.AES:
            telling.discard("encrypt/decrypt")
        if proof.ok and telling:
            return "same", f"the slot holds the same object (compared by {' + '.join(telling)})"
        return "unknown", (
            "an object of that class, label and id is in the slot; nothing sealkeep can "
            f"check tells whether it is the set's ({proof.detail or 'no check applies'})"
        )

    def _recreate(self, kek: SetKey, entry: KeyEntry, wrapping: Wrapping | None = None) -> Any:
        """The entry made in the slot; a secret key of a set whose keys were made by direct
        calls is unwrapped in ``wrapping``'s session (by default the set's)."""
        object_class = ObjectClass(entry.object_class)
        template = replay_template(entry.attributes)
        if object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
            if entry.wrapped is None or entry.key_type is None:
                raise ValueError("the set holds no wrapped value or key type for it")
            key_type = KeyType(entry.key_type)
            # Every restored key is sensitive, whatever it was: a set's KEK of key hierarchy 2
            # refuses any other unwrap, and no key comes back more readable than it left.
            # MODIFIABLE goes last: SoftHSM2 refuses what follows MODIFIABLE false there.
            template[A.SENSITIVE] = True
            if A.MODIFIABLE in template:
                template[A.MODIFIABLE] = template.pop(A.MODIFIABLE)
            for flag in _CAPABILITY_FLAGS:
                template.setdefault(flag, DEFAULT)
            wrapped = entry.wrapped
            direct = (wrapping or kek.direct) if object_class == ObjectClass.SECRET_KEY else None

            def unwrap(chosen: dict[Attribute, Any]) -> Any:
                if direct is not None:
                    return self._unwrap_direct(kek, direct, wrapped, chosen)
                return kek.unwrap(
                    object_class, key_type, wrapped, store=True, capabilities=0, template=chosen
                )

            return self._with_refused_attribute_left_out(object_class, key_type, template, unwrap)
        return self.session.create_object(template)

    def _unwrap_direct(
        self, kek: SetKey, direct: Wrapping, wrapped: bytes, template: dict[Attribute, Any]
    ) -> _RestoredKey:
        """The key unwrapped by one direct call in ``direct``'s session, with the template
        python-pkcs11 would pass (the same values packed by the same mapper; DEFAULT leaves an
        attribute out); later calls on it go through the set's session."""
        packed: RawTemplate = {
            int(kind): self._mapper.pack_attribute(kind, value)
            for kind, value in template.items()
            if value is not DEFAULT
        }
        handle = direct.unwrap(int(kek.handle.handle), wrapped, packed)
        found_by = {
            A.TOKEN: True,
            A.CLASS: template[A.CLASS],
            A.LABEL: template.get(A.LABEL, ""),
            A.ID: template.get(A.ID, b""),
        }
        own = kek.direct or direct  # the worker's session closes once the restore is done
        return _RestoredKey(self.session, handle, found_by, own, self._mapper)

    def _refusals(self) -> dict[tuple[int, int], Attribute]:
        """Per (class, key type), the attribute the token refuses in an unwrap template."""
        refused: dict[tuple[int, int], Attribute] | None = getattr(
            self, "_refused_attributes", None
        )
        if refused is None:
            refused = {}
            self._refused_attributes = refused
        return refused

    def _with_refused_attribute_left_out(
        self,
        object_class: ObjectClass,
        key_type: KeyType,
        template: dict[Attribute, Any],
        make: Callable[[dict[Attribute, Any]], Any],
    ) -> Any:
        """``make(template)``; where the token refuses one attribute of the template (as
        openCryptoki 3.8.1 refuses CKA_EXTRACTABLE in C_UnwrapKey, "read only"), ``make``
        without it. The one left out is found once per class and key type, by trying each;
        the restore's read-back then names what the key did not keep."""
        refused = self._refusals()
        kind = (int(object_class), int(key_type))
        known = refused.get(kind)  # once: the restore's workers may find it meanwhile
        if known is not None:
            template = {k: v for k, v in template.items() if k != known}
        try:
            return make(template)
        except PKCS11Error as first:
            if known is not None or not _refuses_template(first):
                raise
            found = refused.get(kind)  # by another worker since: tried first
            candidates = [k for k in template if k not in _NEVER_LEFT_OUT]
            candidates.sort(key=lambda k: k != found)
            for attribute in candidates:
                try:
                    made = make({k: v for k, v in template.items() if k != attribute})
                except PKCS11Error as again:
                    if _refuses_template(again):
                        continue
                    raise
                refused[kind] = attribute
                return made
            raise first

    def prove(
        self,
        obj: Any,
        entry: KeyEntry,
        kek: SetKey | None = None,
        public: Attributes | None = None,
        via: Wrapping | None = None,
    ) -> Proof:
        """Prove a restored object is the one backed up, by using it where it allows (a
        secret key's calls in ``via``'s session where given).

        - RSA / EC / Ed25519 private keys: sign in the HSM, verify here against the public
          half from the set (RSA decrypt-only keys: encrypt here, decrypt in the HSM);
        - AES keys: encrypt/decrypt in the HSM, and the key check value where one was kept;
        - every secret or private key: wrapped again under the set's KEK, which must give the
          very bytes stored in the set (AES key wrap is deterministic): a check value of the
          whole key, for keys that allow no operation sealkeep can check;
        - public keys and certificates: their values read back from the token.
        """
        try:
            return _prove(obj, entry, kek, public, via)
        except PKCS11Error as exc:
            return Proof(False, "error", f"the HSM failed while proving it ({_error_name(exc)})")
