"""Listing a slot: every token object with the attributes that matter, through one search
and one direct call per object where the module allows it (python-pkcs11 otherwise).
:class:`SlotListing` is a part of :class:`sealkeep.hsm.HsmSession`, kept here for size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import PKCS11Error

from .hsm_base import (
    CAPTURE,
    CK_UNAVAILABLE_INFORMATION,
    A,
    ObjectInfo,
    _bytes,
    _exportability,
    _ident,
    _int,
    _ListedObject,
    _plain,
    _python_class,
    _read,
    _str,
)
from .hsm_raw import RawError
from .manifest import Attributes, AttrValue

if TYPE_CHECKING:
    from .hsm import Hsm


class SlotListing:
    """The objects of a slot (a part of HsmSession, which gives what is declared here)."""

    hsm: Hsm
    session: Any
    _mapper: Any
    _decoded: dict[tuple[int, bytes], AttrValue | None]

    def _token_objects(self, template: dict[Attribute, Any] | None = None) -> Iterator[Any]:
        query: dict[Attribute, Any] = {A.TOKEN: True}
        if template:
            query.update(template)
        yield from self.session.get_objects(query)

    def _raw_objects(self, first: tuple[Attribute, ...]) -> Iterator[tuple[int, Attributes]]:
        """(handle, attributes among ``first``) of every token object, by direct calls.

        Raises :class:`RawError` before yielding anything when direct calls do not work.
        """
        raw = self.hsm.raw()
        if raw is None:
            raise RawError("no direct access to the module")
        handle = int(self.session.handle)
        token_true = self._mapper.pack_attribute(A.TOKEN, True)
        found = raw.find(handle, {int(A.TOKEN): token_true})
        types = tuple(int(a) for a in first)

        def objects() -> Iterator[tuple[int, Attributes]]:
            for obj in found:
                yield obj, self._decode(raw.read(handle, obj, types))

        return objects()

    def _decode(self, values: dict[int, bytes]) -> Attributes:
        """Raw attribute values as :func:`_read` gives them (python-pkcs11's conversions).

        A value python-pkcs11 cannot convert is left out, as :func:`_read` leaves it out.
        Flags and numbers take few distinct values, so their conversions are remembered.
        """
        result: Attributes = {}
        known = self._decoded
        for kind, raw in values.items():
            key = (kind, raw)
            try:
                value = known[key]
            except KeyError:
                value = self._convert(kind, raw)
                if len(raw) <= 8:
                    known[key] = value
            if value is not None:
                result[kind] = value
        return result

    def _convert(self, kind: int, raw: bytes) -> AttrValue | None:
        try:
            unpack = self._mapper._handler(Attribute(kind))[1]
            value = _plain(unpack(raw))
        except (NotImplementedError, ValueError, TypeError, struct.error):
            return None
        if kind == A.KEY_GEN_MECHANISM and value == CK_UNAVAILABLE_INFORMATION:
            return None
        return value

    def read_attributes(
        self, obj: Any, attributes: Sequence[Attribute], session: int | None = None
    ) -> Attributes:
        """What :func:`_read` gives for ``obj``, in one direct call where that works (in
        ``session`` where given, else this one's)."""
        raw = self.hsm.raw()
        if raw is not None:
            handle = int(self.session.handle) if session is None else session
            with suppress(RawError, PKCS11Error):
                types = tuple(int(a) for a in attributes)
                return self._decode(raw.read(handle, int(obj.handle), types))
        return _read(obj, attributes)

    def _listed(self, handle: int, attrs: Attributes) -> _ListedObject:
        template = {
            A.TOKEN: True,
            A.CLASS: _int(attrs, A.CLASS) or 0,
            A.LABEL: _str(attrs, A.LABEL),
            A.ID: _bytes(attrs, A.ID) or b"",
        }
        return _ListedObject(self.session, handle, template)

    def _objects_direct(self) -> list[ObjectInfo]:
        # Most objects of a slot are secret keys: read their attributes (CLASS among them) at
        # once, and read again only the few objects of another class. The secret-key set holds
        # no key material of any class, so reading it from any object reveals nothing.
        result = []
        handle = int(self.session.handle)
        raw = self.hsm.raw()
        if raw is None:
            raise RawError("no direct access to the module")
        secret = CAPTURE[ObjectClass.SECRET_KEY]
        for obj, attrs in self._raw_objects(secret):
            value = _int(attrs, A.CLASS)
            try:
                object_class = ObjectClass(value) if value is not None else None
            except ValueError:
                continue
            if object_class is None:
                continue
            if object_class not in CAPTURE:
                # Listed, so that nothing in the slot goes unmentioned; never backed up.
                attrs = {
                    int(A.CLASS): int(object_class),
                    **self._decode(raw.read(handle, obj, (int(A.LABEL),))),
                }
            elif object_class != ObjectClass.SECRET_KEY:
                types = tuple(int(a) for a in CAPTURE[object_class])
                attrs = self._decode(raw.read(handle, obj, types))
            exportable, reason = _exportability(attrs)
            result.append(ObjectInfo(attrs, exportable, reason, self._listed(obj, attrs)))
        return result

    def _objects_pkcs11(self) -> list[ObjectInfo]:
        result = []
        for obj in self._token_objects():
            # python-pkcs11 already read CLASS to pick the object's Python class; asking the
            # token again costs a call (~35 µs on SoftHSM2's file store, per object).
            object_class = _python_class(obj)
            if object_class is None:
                continue
            attrs = _read(obj, CAPTURE[object_class])
            exportable, reason = _exportability(attrs)
            result.append(ObjectInfo(attrs, exportable, reason, obj))
        return result

    def present_keys(self) -> set[tuple[int, str, bytes]]:
        """(class, label, id) of every token object: one scan, for cheap presence checks."""
        wanted = (A.CLASS, A.LABEL, A.ID)
        try:
            return {_ident(attrs) for _, attrs in self._raw_objects(wanted)}
        except RawError:
            return {_ident(_read(obj, wanted)) for obj in self._token_objects()}
