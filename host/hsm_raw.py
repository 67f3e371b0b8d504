"""Direct calls into a PKCS#11 module, through ctypes, for what python-pkcs11 cannot do.

Two uses. Listing: python-pkcs11 spends four C_GetAttributeValue calls and a new Python class
on every object it finds, so :class:`RawModule` finds every handle with one C_FindObjects call
and reads all the attributes of an object with one C_GetAttributeValue call. Templates with
array attributes: python-pkcs11 0.10 cannot pass CKA_UNWRAP_TEMPLATE (a CK_ATTRIBUTE whose
value is itself an array of CK_ATTRIBUTE), which the key hierarchy needs, so objects that
carry one are created, generated and unwrapped here.

The module is the same shared library python-pkcs11 loaded (the dynamic loader hands out the
one already loaded and initialised), so the session handles of python-pkcs11 are valid here,
and the handles made here are valid there.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any, TypeAlias

from pkcs11 import Attribute
from pkcs11.exceptions import PKCS11Error

__all__ = [
    "CKA_UNWRAP_TEMPLATE",
    "CK_UNAVAILABLE",
    "VALUE_ROOM",
    "CkAttribute",
    "HsmCallError",
    "RawError",
    "RawModule",
    "RawTemplate",
    "RawValue",
]

CK_ULONG = ctypes.c_ulong
CK_UNAVAILABLE = (1 << (8 * ctypes.sizeof(CK_ULONG))) - 1
_CKR_OK = 0x0
CKR_ATTRIBUTE_READ_ONLY = 0x10
_CKR_ATTRIBUTE_SENSITIVE = 0x11
CKR_ATTRIBUTE_TYPE_INVALID = 0x12
CKR_ATTRIBUTE_VALUE_INVALID = 0x13
# What a token answers when it will not take an attribute of a template.
TEMPLATE_REFUSALS = frozenset(
    {CKR_ATTRIBUTE_READ_ONLY, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID}
)
_CKR_BUFFER_TOO_SMALL = 0x150
CKU_USER = 1
_READ_OK = (_CKR_OK, _CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID)
WRAP_ROOM = 8192  # an RSA-4096 private key wraps into ~2.4 KB
VALUE_ROOM = 8192  # bytes per attribute in the one-call read; larger values take two calls
# Attributes held in a CK_BBOOL, CK_ULONG or CK_DATE, and key components no key in use makes
# as long as the room: one of them that reads unavailable is absent or sensitive.
_NEVER_LONG = frozenset(
    int(Attribute[name])
    for name in (
        "CLASS TOKEN PRIVATE MODIFIABLE COPYABLE DESTROYABLE KEY_TYPE CERTIFICATE_TYPE "
        "CERTIFICATE_CATEGORY TRUSTED LOCAL SENSITIVE ALWAYS_SENSITIVE EXTRACTABLE "
        "NEVER_EXTRACTABLE ENCRYPT DECRYPT WRAP UNWRAP SIGN SIGN_RECOVER VERIFY VERIFY_RECOVER "
        "DERIVE WRAP_WITH_TRUSTED ALWAYS_AUTHENTICATE VALUE_LEN MODULUS_BITS KEY_GEN_MECHANISM "
        "START_DATE END_DATE CHECK_VALUE MODULUS PUBLIC_EXPONENT PRIME SUBPRIME BASE EC_PARAMS "
        "EC_POINT"
    ).split()
)
_FIND_BATCH = 4096
# Positions in CK_FUNCTION_LIST (PKCS#11 v2.x, after the version).
_FN_LOGIN = 18
_FN_LOGOUT = 19
_FN_CREATE_OBJECT = 20
_FN_DESTROY_OBJECT = 22
_FN_GET_ATTRIBUTE_VALUE = 24
_FN_SET_ATTRIBUTE_VALUE = 25
_FN_FIND_OBJECTS_INIT = 26
_FN_FIND_OBJECTS = 27
_FN_FIND_OBJECTS_FINAL = 28
_FN_ENCRYPT_INIT = 29
_FN_ENCRYPT = 30
_FN_DECRYPT_INIT = 33
_FN_DECRYPT = 34
_FN_SIGN_INIT = 42
_FN_SIGN = 43
_FN_GENERATE_KEY = 58
_FN_WRAP_KEY = 60
_FN_UNWRAP_KEY = 61
_FN_COUNT = 68
_FN_INITIALIZE = 0
_FN_FINALIZE = 1
_FN_OPEN_SESSION = 12
_FN_CLOSE_SESSION = 13
_CKF_OS_LOCKING_OK = 0x2
_CKF_RW_SESSION = 0x2
_CKF_SERIAL_SESSION = 0x4


class CkAttribute(ctypes.Structure):
    _fields_ = (("type", CK_ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", CK_ULONG))


class _CkFunctionList(ctypes.Structure):
    _fields_ = (("version", ctypes.c_ubyte * 2), ("functions", ctypes.c_void_p * _FN_COUNT))


class _CkInitializeArgs(ctypes.Structure):
    _fields_ = (
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", ctypes.c_void_p),
    )


class RawError(Exception):
    """Direct calls do not work with this module: the caller goes back to python-pkcs11."""


_ATTRS = ctypes.POINTER(CkAttribute)
_ULONGS = ctypes.POINTER(CK_ULONG)


class _CkMechanism(ctypes.Structure):
    _fields_ = (
        ("mechanism", CK_ULONG),
        ("pParameter", ctypes.c_void_p),
        ("ulParameterLen", CK_ULONG),
    )


_MECHANISM = ctypes.POINTER(_CkMechanism)
_BYTES = ctypes.c_char_p


class _CkGcmParams(ctypes.Structure):
    # PKCS#11 2.40's layout, with ulIvBits, as SoftHSM2 and python-pkcs11 use it.
    _fields_ = (
        ("pIv", ctypes.c_void_p),
        ("ulIvLen", CK_ULONG),
        ("ulIvBits", CK_ULONG),
        ("pAAD", ctypes.c_void_p),
        ("ulAADLen", CK_ULONG),
        ("ulTagBits", CK_ULONG),
    )


class GcmParameter:
    """A CK_GCM_PARAMS and the buffers it points into: ``bytes(parameter)`` is what a
    CK_MECHANISM carries, valid while this object lives."""

    def __init__(self, nonce: bytes, aad: bytes, tag_bits: int) -> None:
        self._nonce = ctypes.create_string_buffer(nonce, max(1, len(nonce)))
        self._aad = ctypes.create_string_buffer(aad, max(1, len(aad)))
        self._structure = _CkGcmParams(
            ctypes.addressof(self._nonce),
            len(nonce),
            len(nonce) * 8,
            ctypes.addressof(self._aad) if aad else None,
            len(aad),
            tag_bits,
        )

    def __bytes__(self) -> bytes:
        return bytes(self._structure)


CKA_UNWRAP_TEMPLATE = 0x40000212
"""CKF_ARRAY_ATTRIBUTE | 0x212: its value is an array of CK_ATTRIBUTE."""

RawValue: TypeAlias = "bool | int | bytes | bytearray | memoryview | str | Mapping[int, RawValue]"
"""An attribute value to pack: CK_BBOOL, CK_ULONG, bytes, UTF-8 text, or a nested template."""

RawTemplate: TypeAlias = Mapping[int, RawValue]

# Return values worth a name in messages (PKCS#11 v2.40).
_CKR_NAMES = {
    0x05: "GENERAL_ERROR",
    0x06: "FUNCTION_FAILED",
    0x10: "ATTRIBUTE_READ_ONLY",
    0x11: "ATTRIBUTE_SENSITIVE",
    0x12: "ATTRIBUTE_TYPE_INVALID",
    0x13: "ATTRIBUTE_VALUE_INVALID",
    0x1B: "ACTION_PROHIBITED",
    0x40: "ENCRYPTED_DATA_INVALID",
    0x41: "ENCRYPTED_DATA_LEN_RANGE",
    0x54: "FUNCTION_NOT_SUPPORTED",
    0x60: "KEY_HANDLE_INVALID",
    0x62: "KEY_SIZE_RANGE",
    0x63: "KEY_TYPE_INCONSISTENT",
    0x67: "KEY_INDIGESTIBLE",
    0x68: "KEY_FUNCTION_NOT_PERMITTED",
    0x69: "KEY_NOT_WRAPPABLE",
    0x6A: "KEY_UNEXTRACTABLE",
    0x70: "MECHANISM_INVALID",
    0x71: "MECHANISM_PARAM_INVALID",
    0x82: "OBJECT_HANDLE_INVALID",
    0xB3: "SESSION_HANDLE_INVALID",
    0xD0: "TEMPLATE_INCOMPLETE",
    0xD1: "TEMPLATE_INCONSISTENT",
    0x101: "USER_NOT_LOGGED_IN",
    0x110: "WRAPPED_KEY_INVALID",
    0x112: "WRAPPED_KEY_LEN_RANGE",
    0x113: "WRAPPING_KEY_HANDLE_INVALID",
    0x115: "WRAPPING_KEY_TYPE_INCONSISTENT",
}


class HsmCallError(PKCS11Error):
    """A direct call returned an error; a PKCS11Error, as python-pkcs11 would raise."""

    def __init__(self, function: str, rv: int) -> None:
        self.function = function
        self.rv = rv
        self.name = _CKR_NAMES.get(rv, f"0x{rv:x}")
        super().__init__(
            f"{function}: CKR_{self.name}" if rv in _CKR_NAMES else f"{function}: {self.name}"
        )


class PackedTemplate:
    """A CK_ATTRIBUTE array built from a :data:`RawTemplate`, nested arrays included.

    Keeps every buffer it points into alive for as long as it lives.
    """

    def __init__(self, template: RawTemplate) -> None:
        self._keep: list[Any] = []
        self.count = len(template)
        self.array = self._pack(template)

    def _pack(self, template: RawTemplate) -> Any:
        # The values are laid out in one buffer, each at an 8-byte boundary (a module may
        # read a CK_ULONG in place): one allocation per template, not one per attribute,
        # which is most of the cost of a call that recreates a key from a set.
        array = (CkAttribute * max(1, len(template)))()
        self._keep.append(array)
        placed: list[tuple[int, int, int]] = []  # (entry, offset in the buffer, length)
        chunks: list[bytes] = []
        offset = 0
        for i, (kind, value) in enumerate(template.items()):
            array[i].type = kind
            if isinstance(value, Mapping):
                inner = self._pack(value)
                array[i].pValue = ctypes.addressof(inner)
                array[i].ulValueLen = len(value) * ctypes.sizeof(CkAttribute)
                continue
            buffer = _in_place(value)
            if buffer is not None:  # a key value: read where it is, never copied here
                self._keep.append(buffer)
                array[i].pValue = ctypes.addressof(buffer)
                array[i].ulValueLen = ctypes.sizeof(buffer)
                continue
            data = _pack_value(value)
            placed.append((i, offset, len(data)))
            chunks.append(data)
            padding = -len(data) % 8 if data else 8  # an empty value still points inside
            chunks.append(bytes(padding))
            offset += len(data) + padding
        if placed:
            values = ctypes.create_string_buffer(b"".join(chunks), offset)
            self._keep.append(values)
            base = ctypes.addressof(values)
            for i, start, length in placed:
                array[i].pValue = base + start
                array[i].ulValueLen = length
        return array


def _in_place(value: object) -> Any:
    """A ctypes view of a writable buffer's own bytes, or None: a key value passed as a
    bytearray, or a memoryview into one, reaches the module with no copy made here."""
    if not isinstance(value, bytearray | memoryview):
        return None
    view = memoryview(value)
    if view.readonly or not view.c_contiguous or not view.nbytes:
        return None
    return (ctypes.c_char * view.nbytes).from_buffer(view)


def _pack_value(value: bool | int | bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return bytes(CK_ULONG(value))
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


class _Template:
    """A reusable CK_ATTRIBUTE array with a buffer per attribute, for one-call reads.

    C_GetAttributeValue rewrites each entry's length, so the array is reset from a pristine
    copy of its bytes before each call (a memmove, not a Python loop).
    """

    def __init__(self, types: Sequence[int]) -> None:
        self.types = tuple(types)
        count = len(self.types)
        self.array = (CkAttribute * count)()
        self.buffer = ctypes.create_string_buffer(VALUE_ROOM * count)
        base = ctypes.addressof(self.buffer)
        self.addresses = [base + i * VALUE_ROOM for i in range(count)]
        self.offsets = [i * VALUE_ROOM for i in range(count)]
        # Values are copied out through a view: cheaper than a foreign call per attribute.
        self.view = memoryview(self.buffer).cast("B")
        for i, kind in enumerate(self.types):
            self.array[i].type = kind
            self.array[i].pValue = self.addresses[i]
            self.array[i].ulValueLen = VALUE_ROOM
        self.pristine = bytes(self.array)
        # The entries' lengths, read as one slice of the array seen as CK_ULONGs (type,
        # pointer, length per entry) where pointers are as wide as CK_ULONG.
        self.words: Any = None
        if ctypes.sizeof(CkAttribute) == 3 * ctypes.sizeof(CK_ULONG):
            self.words = (CK_ULONG * (3 * count)).from_buffer(self.array)

    def lengths(self) -> list[int]:
        if self.words is not None:
            return list(self.words[2::3])
        return [entry.ulValueLen for entry in self.array]


def _mechanism(mechanism: int, parameter: bytes | None = None) -> Any:
    """A CK_MECHANISM; ``parameter`` (an IV, say) is kept alive by the structure's buffer."""
    if parameter is None:
        return ctypes.byref(_CkMechanism(int(mechanism), None, 0))
    buffer = ctypes.create_string_buffer(parameter, len(parameter))
    structure = _CkMechanism(int(mechanism), ctypes.cast(buffer, ctypes.c_void_p), len(parameter))
    structure._parameter = buffer  # owned by the structure, so freed with it
    return ctypes.byref(structure)


def _check(function: str, rv: int) -> None:
    if rv != _CKR_OK:
        raise HsmCallError(function, rv)


class RawModule:
    """Direct calls on the module python-pkcs11 loaded: fast listing, and array templates.

    Listing a slot through python-pkcs11 costs four C_GetAttributeValue calls per object (two
    to pick the Python class of each object found, two to read its attributes) and the making
    of a Python class per object: ~250 µs per object on SoftHSM2, 2.6 s for a slot of 10,000
    keys. Here one C_FindObjects call returns every handle and one C_GetAttributeValue call
    with buffers already in place reads all the attributes of an object (~60 µs in all).
    The module is the same shared library (the dynamic loader hands out the one already
    loaded and initialised), so the session handles of python-pkcs11 are valid here.
    """

    def __init__(self, module: str) -> None:
        try:
            library = ctypes.CDLL(module)
            get_list = library.C_GetFunctionList
        except (OSError, AttributeError) as exc:
            raise RawError(str(exc)) from None
        get_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_CkFunctionList))]
        get_list.restype = CK_ULONG
        table = ctypes.POINTER(_CkFunctionList)()
        if get_list(ctypes.byref(table)) != _CKR_OK or not table:
            raise RawError("C_GetFunctionList failed")
        functions = table.contents.functions

        def bind(index: int, *argtypes: Any) -> Any:
            address = functions[index]
            if not address:
                raise RawError(f"function {index} is missing")
            return ctypes.CFUNCTYPE(CK_ULONG, *argtypes)(address)

        self._library = library  # keeps the module referenced while the functions are bound
        self._login = bind(_FN_LOGIN, CK_ULONG, CK_ULONG, _BYTES, CK_ULONG)
        self._logout = bind(_FN_LOGOUT, CK_ULONG)
        self._get = bind(_FN_GET_ATTRIBUTE_VALUE, CK_ULONG, CK_ULONG, _ATTRS, CK_ULONG)
        self._set = bind(_FN_SET_ATTRIBUTE_VALUE, CK_ULONG, CK_ULONG, _ATTRS, CK_ULONG)
        self._find_init = bind(_FN_FIND_OBJECTS_INIT, CK_ULONG, _ATTRS, CK_ULONG)
        self._find = bind(_FN_FIND_OBJECTS, CK_ULONG, _ULONGS, CK_ULONG, _ULONGS)
        self._find_final = bind(_FN_FIND_OBJECTS_FINAL, CK_ULONG)
        handle_out = ctypes.POINTER(CK_ULONG)
        self._create = bind(_FN_CREATE_OBJECT, CK_ULONG, _ATTRS, CK_ULONG, handle_out)
        self._destroy = bind(_FN_DESTROY_OBJECT, CK_ULONG, CK_ULONG)
        self._decrypt_init = bind(_FN_DECRYPT_INIT, CK_ULONG, _MECHANISM, CK_ULONG)
        self._decrypt = bind(_FN_DECRYPT, CK_ULONG, _BYTES, CK_ULONG, ctypes.c_void_p, _ULONGS)
        self._encrypt_init = bind(_FN_ENCRYPT_INIT, CK_ULONG, _MECHANISM, CK_ULONG)
        self._encrypt = bind(_FN_ENCRYPT, CK_ULONG, _BYTES, CK_ULONG, ctypes.c_void_p, _ULONGS)
        self._sign_init = bind(_FN_SIGN_INIT, CK_ULONG, _MECHANISM, CK_ULONG)
        self._sign = bind(_FN_SIGN, CK_ULONG, _BYTES, CK_ULONG, ctypes.c_void_p, _ULONGS)
        self._generate = bind(_FN_GENERATE_KEY, CK_ULONG, _MECHANISM, _ATTRS, CK_ULONG, handle_out)
        self._wrap = bind(
            _FN_WRAP_KEY, CK_ULONG, _MECHANISM, CK_ULONG, CK_ULONG, ctypes.c_void_p, _ULONGS
        )
        self._unwrap = bind(
            _FN_UNWRAP_KEY,
            CK_ULONG,
            _MECHANISM,
            CK_ULONG,
            _BYTES,
            CK_ULONG,
            _ATTRS,
            CK_ULONG,
            handle_out,
        )
        self._initialize = bind(_FN_INITIALIZE, ctypes.c_void_p)
        self._finalize = bind(_FN_FINALIZE, ctypes.c_void_p)
        self._open_session = bind(
            _FN_OPEN_SESSION, CK_ULONG, CK_ULONG, ctypes.c_void_p, ctypes.c_void_p, handle_out
        )
        self._close_session = bind(_FN_CLOSE_SESSION, CK_ULONG)
        self._templates: dict[tuple[int, ...], _Template] = {}
        self._lock = threading.Lock()  # the templates' buffers are shared

    # -- the module as a whole -------------------------------------------------------------

    def initialise_for_threads(self) -> bool:
        """Initialise the module again, telling it that it may be called from several threads
        at once (CKF_OS_LOCKING_OK): whether it took that. python-pkcs11 initialises it with
        NULL arguments, which tells a module it need not lock (SoftHSM2 then turns its locks
        off). Every session of this process on the module ends here: call it before any is
        opened. A module that cannot lock is initialised as python-pkcs11 had it."""
        self._finalize(None)
        arguments = _CkInitializeArgs(None, None, None, None, _CKF_OS_LOCKING_OK, None)
        if self._initialize(ctypes.byref(arguments)) == _CKR_OK:
            return True
        _check("C_Initialize", self._initialize(None))
        return False

    def open_session(self, slot_id: int) -> int:
        """C_OpenSession, read/write: the handle (it shares the login of the other sessions
        of this process on the token)."""
        handle = CK_ULONG()
        flags = _CKF_SERIAL_SESSION | _CKF_RW_SESSION
        _check("C_OpenSession", self._open_session(slot_id, flags, None, None, handle))
        return handle.value

    def close_session(self, session: int) -> None:
        """C_CloseSession."""
        _check("C_CloseSession", self._close_session(session))

    # -- keys, with templates python-pkcs11 cannot pass ------------------------------------

    def login(self, session: int, pin: bytes) -> None:
        """C_Login as the normal user."""
        _check("C_Login", self._login(session, CKU_USER, pin, len(pin)))

    def logout(self, session: int) -> None:
        """C_Logout (every session of this process)."""
        _check("C_Logout", self._logout(session))

    def create_object(self, session: int, template: RawTemplate) -> int:
        """C_CreateObject: the new object's handle."""
        packed = PackedTemplate(template)
        handle = CK_ULONG()
        _check("C_CreateObject", self._create(session, packed.array, packed.count, handle))
        return handle.value

    def destroy_object(self, session: int, handle: int) -> None:
        """C_DestroyObject."""
        _check("C_DestroyObject", self._destroy(session, handle))

    def set_attributes(self, session: int, handle: int, template: RawTemplate) -> None:
        """C_SetAttributeValue."""
        packed = PackedTemplate(template)
        _check("C_SetAttributeValue", self._set(session, handle, packed.array, packed.count))

    def decrypt(
        self, session: int, mechanism: int, key: int, data: bytes, parameter: bytes | None = None
    ) -> bytes:
        """C_DecryptInit and C_Decrypt (``parameter``: the mechanism's, an IV or a
        :class:`GcmParameter`'s bytes)."""
        mech = _mechanism(mechanism, parameter)
        _check("C_DecryptInit", self._decrypt_init(session, mech, key))
        size = CK_ULONG(len(data) + 64)
        buffer = ctypes.create_string_buffer(size.value)
        address = ctypes.addressof(buffer)
        _check("C_Decrypt", self._decrypt(session, data, len(data), address, ctypes.byref(size)))
        return buffer.raw[: size.value]

    def encrypt(
        self, session: int, mechanism: int, key: int, data: bytes, parameter: bytes | None = None
    ) -> bytes:
        """C_EncryptInit and C_Encrypt, in one part (``parameter`` as for :meth:`decrypt`)."""
        mech = _mechanism(mechanism, parameter)
        _check("C_EncryptInit", self._encrypt_init(session, mech, key))
        size = CK_ULONG(len(data) + 64)  # room for a block of padding and a tag
        buffer = ctypes.create_string_buffer(size.value)
        address = ctypes.addressof(buffer)
        _check("C_Encrypt", self._encrypt(session, data, len(data), address, ctypes.byref(size)))
        return buffer.raw[: size.value]

    def sign(self, session: int, mechanism: int, key: int, data: bytes) -> bytes:
        """C_SignInit and C_Sign with a mechanism that takes no parameter (an HMAC)."""
        _check("C_SignInit", self._sign_init(session, _mechanism(mechanism), key))
        size = CK_ULONG(512)
        buffer = ctypes.create_string_buffer(size.value)
        address = ctypes.addressof(buffer)
        _check("C_Sign", self._sign(session, data, len(data), address, ctypes.byref(size)))
        return buffer.raw[: size.value]

    def generate_key(self, session: int, mechanism: int, template: RawTemplate) -> int:
        """C_GenerateKey with a mechanism that takes no parameter: the new key's handle."""
        packed = PackedTemplate(template)
        handle = CK_ULONG()
        rv = self._generate(session, _mechanism(mechanism), packed.array, packed.count, handle)
        _check("C_GenerateKey", rv)
        return handle.value

    def wrap_key(
        self,
        session: int,
        mechanism: int,
        wrapping_key: int,
        key: int,
        parameter: bytes | None = None,
    ) -> bytes:
        """C_WrapKey (``parameter``: the mechanism's, an IV for CBC): the wrapped key.

        One call into a buffer room for any usual key (a token computes the whole wrap to
        answer a length query, so asking first would wrap each key twice); a larger key is
        asked its length, as the token answers CKR_BUFFER_TOO_SMALL with it.
        """
        mech = _mechanism(mechanism, parameter)
        size = CK_ULONG(WRAP_ROOM)
        buffer = ctypes.create_string_buffer(WRAP_ROOM)
        rv = self._wrap(
            session, mech, wrapping_key, key, ctypes.addressof(buffer), ctypes.byref(size)
        )
        if rv == _CKR_BUFFER_TOO_SMALL:
            buffer = ctypes.create_string_buffer(max(1, size.value))
            address = ctypes.addressof(buffer)
            rv = self._wrap(session, mech, wrapping_key, key, address, ctypes.byref(size))
        _check("C_WrapKey", rv)
        return buffer.raw[: size.value]

    def unwrap_key(
        self,
        session: int,
        mechanism: int,
        unwrapping_key: int,
        wrapped: bytes,
        template: RawTemplate,
        parameter: bytes | None = None,
    ) -> int:
        """C_UnwrapKey (``parameter``: the mechanism's, an IV for CBC): the new key's handle."""
        packed = PackedTemplate(template)
        handle = CK_ULONG()
        rv = self._unwrap(
            session,
            _mechanism(mechanism, parameter),
            unwrapping_key,
            wrapped,
            len(wrapped),
            packed.array,
            packed.count,
            handle,
        )
        _check("C_UnwrapKey", rv)
        return handle.value

    # -- listing ---------------------------------------------------------------------------

    def find(self, session: int, template: dict[int, bytes]) -> list[int]:
        """The handles of the objects matching ``template`` (values packed already)."""
        array = (CkAttribute * max(1, len(template)))()
        values = [ctypes.create_string_buffer(v, len(v)) for v in template.values()]
        for i, (kind, value) in enumerate(zip(template, values, strict=True)):
            array[i].type = kind
            array[i].pValue = ctypes.addressof(value)
            array[i].ulValueLen = len(template[kind])
        rv = self._find_init(session, array, len(template))
        if rv != _CKR_OK:
            raise RawError(f"C_FindObjectsInit: 0x{rv:x}")
        handles: list[int] = []
        batch = (CK_ULONG * _FIND_BATCH)()
        count = CK_ULONG()
        try:
            while True:
                rv = self._find(session, batch, _FIND_BATCH, ctypes.byref(count))
                if rv != _CKR_OK:
                    raise RawError(f"C_FindObjects: 0x{rv:x}")
                if count.value == 0:
                    return handles
                handles.extend(batch[: count.value])
        finally:
            self._find_final(session)

    def read(self, session: int, handle: int, types: tuple[int, ...]) -> dict[int, bytes]:
        """The raw values of the attributes the object has among ``types``; one call as a rule."""
        with self._lock:
            template = self._templates.get(types)
            if template is None:
                template = self._templates[types] = _Template(types)
            array = template.array
            ctypes.memmove(array, template.pristine, len(template.pristine))
            rv = self._get(session, handle, array, len(types))
            lengths = template.lengths()
            # A token that refuses the template may leave entries untouched (still showing
            # the room): those are read one by one below, never taken for values.
            answered = rv == _CKR_OK or (rv in _READ_OK and VALUE_ROOM not in lengths)
            if answered:
                view = template.view
                values = {
                    kind: view[offset : offset + length].tobytes()
                    for kind, offset, length in zip(types, template.offsets, lengths, strict=True)
                    if length != CK_UNAVAILABLE
                }
        if answered:
            if rv != _CKR_OK:
                # An entry too long for its room reads unavailable too, and the token may
                # then answer for another entry (openCryptoki answers
                # CKR_ATTRIBUTE_TYPE_INVALID, as the standard allows): the lengths of the
                # unavailable ones that could be long tell which they are.
                unsure = [
                    kind
                    for kind, length in zip(types, lengths, strict=True)
                    if length == CK_UNAVAILABLE and kind not in _NEVER_LONG
                ]
                if unsure:
                    with suppress(RawError):
                        values.update(self._read_sized(session, handle, unsure))
            return values
        if rv == _CKR_BUFFER_TOO_SMALL:
            return self._read_sized(session, handle, types)
        # Some tokens refuse a whole template for one attribute they do not know: one by one.
        found: dict[int, bytes] = {}
        for kind in types:
            with suppress(RawError):
                found.update(self._read_sized(session, handle, (kind,)))
        return found

    def _read_sized(self, session: int, handle: int, types: Sequence[int]) -> dict[int, bytes]:
        """Ask the lengths first, then the values (for values larger than the usual room)."""
        array = (CkAttribute * len(types))()
        for i, kind in enumerate(types):
            array[i].type = kind
            array[i].ulValueLen = CK_UNAVAILABLE  # what an entry the token skips must read as
        rv = self._get(session, handle, array, len(types))
        if rv not in _READ_OK:
            raise RawError(f"C_GetAttributeValue: 0x{rv:x}")
        wanted = [
            (kind, array[i].ulValueLen)
            for i, kind in enumerate(types)
            if array[i].ulValueLen != CK_UNAVAILABLE
        ]
        if not wanted:
            return {}
        second = (CkAttribute * len(wanted))()
        buffers = [ctypes.create_string_buffer(max(1, length)) for _, length in wanted]
        for i, (kind, length) in enumerate(wanted):
            second[i].type = kind
            second[i].pValue = ctypes.addressof(buffers[i])
            second[i].ulValueLen = length
        rv = self._get(session, handle, second, len(wanted))
        if rv != _CKR_OK:
            raise RawError(f"C_GetAttributeValue: 0x{rv:x}")
        return {
            kind: buffers[i].raw[: second[i].ulValueLen]
            for i, (kind, _) in enumerate(wanted)
            if second[i].ulValueLen != CK_UNAVAILABLE
        }
