"""A PIN holder against a slot after `domain create` and `backup`: no plaintext.

The attacker holds the slot PIN and a copy of the set (an owner session on a drive gives
it: the HSM computes owner credentials for anyone logged in), and calls PKCS#11 directly,
with python-pkcs11 and, for array attributes, direct calls. The backed-up keys are gone from
the slot, so only the backup could give them. Every path tried must leave the attacker
without the value of a backed-up key, of a set's KEK or manifest key, or of a domain key.

One path stays open, and ``domain create`` says so: a set KEK unwrapped under the template
the domain key forces carries no unwrap template of its own (SoftHSM2 refuses a nested
CKA_UNWRAP_TEMPLATE), so the set's keys can be unwrapped through it as non-sensitive. Each
of them was extractable in its slot (sealkeep backs up no other), and a restore keeps that,
so such a key is exactly as exposed as it was before the backup:
:func:`test_a_set_key_gives_only_what_a_restore_gives` pins this down.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding
from pkcs11 import Attribute as A
from pkcs11 import KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.util.rsa import decode_rsa_private_key
from sealkeep import manifest
from sealkeep.backupset import authenticate_copy, backup, set_object_name
from sealkeep.domain import (
    DriveGroup,
    create_domain,
    owner_login,
)
from sealkeep.hsm import Hsm, HsmSession
from sealkeep.pins import Passphrases

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmToken

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cheap_kdf")]
pytest_plugins = ["hsm_fixtures"]

KWP = Mechanism.AES_KEY_WRAP_PAD
CKA_UNWRAP_TEMPLATE = 0x40000212


@dataclass
class Scene:
    """The slot after the backup, what the attacker holds, and what must not leak."""

    session: Any  # the attacker's python-pkcs11 session, logged in with the PIN
    hsm_session: HsmSession
    set_data: bytes
    wrapped_kek: bytes
    wrapped_manifest_key: bytes | None
    blobs: dict[str, bytes]  # label -> wrapped value, as in the set
    secrets: dict[str, bytes]  # label -> a value that must not leak (key or component)
    leaks: list[str] = field(default_factory=list)

    def reveals(self, data: bytes) -> str | None:
        """Which secret ``data`` gives away, directly or as a key that unwraps a blob."""
        for name, value in self.secrets.items():
            if value in data:
                return name
        if len(data) in (16, 24, 32):
            for label, blob in self.blobs.items():
                try:
                    plain = aes_key_unwrap_with_padding(data, blob)
                except (InvalidUnwrap, ValueError):
                    continue
                return self.reveals(plain) or f"a key that unwraps {label}"
        return None

    def check(self, path: str, data: bytes) -> None:
        found = self.reveals(data)
        if found is not None:
            self.leaks.append(f"{path}: {found}")

    def sealkeep_objects(self) -> list[Any]:
        return [
            o
            for o in self.session.get_objects({A.CLASS: ObjectClass.SECRET_KEY})
            if str(o[A.LABEL]).startswith("sealkeep-")
        ]

    def domain_key(self, label: str) -> Any | None:
        found = list(self.session.get_objects({A.LABEL: label, A.TOKEN: True}))
        return found[0] if found else None

    def session_handles(self) -> set[int]:
        return {o.handle for o in self.session.get_objects({A.TOKEN: False})}

    def loot(self, path: str, before: set[int]) -> None:
        """Read every session object a call left behind, even a refused one."""
        for obj in self.session.get_objects({A.TOKEN: False}):
            if obj.handle in before:
                continue
            self.read_everything(f"{path} (object left behind)", obj)

    def read_everything(self, path: str, obj: Any) -> None:
        for attribute in (A.VALUE, A.PRIVATE_EXPONENT, A.PRIME_1, A.PRIME_2):
            try:
                value = obj[attribute]
            except (PKCS11Error, NotImplementedError, ValueError):
                continue
            if isinstance(value, bytes):
                self.check(f"{path}: {attribute.name}", value)


def known_keys(session: Any) -> dict[str, bytes]:
    """Backed-up keys whose values the test knows: AES, HMAC, RSA; all extractable."""
    aes = bytes(range(32))
    hmac_key = bytes(range(100, 132))
    session.create_object(
        {
            A.CLASS: ObjectClass.SECRET_KEY,
            A.KEY_TYPE: KeyType.AES,
            A.TOKEN: True,
            A.LABEL: "known-aes",
            A.ID: b"\x01",
            A.VALUE: aes,
            A.SENSITIVE: True,
            A.EXTRACTABLE: True,
            A.ENCRYPT: True,
            A.DECRYPT: True,
            A.SIGN: False,
            A.VERIFY: False,
            A.WRAP: False,
            A.UNWRAP: False,
        }
    )
    session.create_object(
        {
            A.CLASS: ObjectClass.SECRET_KEY,
            A.KEY_TYPE: KeyType.GENERIC_SECRET,
            A.TOKEN: True,
            A.LABEL: "known-hmac",
            A.ID: b"\x02",
            A.VALUE: hmac_key,
            A.SENSITIVE: True,
            A.EXTRACTABLE: True,
            A.SIGN: True,
            A.VERIFY: True,
        }
    )
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    template = decode_rsa_private_key(der)
    template.update(
        {
            A.TOKEN: True,
            A.LABEL: "known-rsa",
            A.ID: b"\x03",
            A.SENSITIVE: True,
            A.EXTRACTABLE: True,
            A.SIGN: True,
            A.DECRYPT: False,
        }
    )
    session.create_object(template)
    numbers = private.private_numbers()
    return {
        "known-aes value": aes,
        "known-hmac value": hmac_key,
        "known-rsa private exponent": _int_bytes(numbers.d),
        "known-rsa prime": _int_bytes(numbers.p),
    }


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@pytest.fixture
def scene(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], emulated_drives: StartDrives, tmp_path: Path
) -> Iterator[Scene]:
    emulator = emulated_drives(3, dir=tmp_path / "drives")
    token = tokens["source"]
    passphrases = Passphrases(
        entries={d.serial: f"custodian {d.serial}: quiet harbour 42" for d in emulator.drives}
    )
    with hsm.open(token.slot_id, token.pin) as session:
        with DriveGroup([d.port for d in emulator.drives]) as group:
            create_domain(session, group.drives, passphrases)
            secrets_ = known_keys(session.session)
            made = backup(session, group.drives, label="nightly")
            # What the attacker can do too: the HSM computes the owner credential.
            data = owner_login(session, group.drives[0]).get(set_object_name(made.set_id))
        for obj in list(session.session.get_objects({A.LABEL: "known-aes"})):
            obj.destroy()
        for label in ("known-hmac", "known-rsa"):
            for obj in list(session.session.get_objects({A.LABEL: label})):
                obj.destroy()
        opened = authenticate_copy(session, data)  # what the set holds, for the checks
        header = manifest.read_header(data)
        yield Scene(
            session=session.session,
            hsm_session=session,
            set_data=data,
            wrapped_kek=header.wrapped_kek,
            wrapped_manifest_key=getattr(header, "wrapped_manifest_key", None),
            blobs={e.label: e.wrapped for e in opened.entries if e.wrapped is not None},
            secrets=secrets_,
        )


def test_no_set_key_is_left_in_the_slot(scene: Scene) -> None:
    assert scene.session_handles() == set()
    labels = sorted(str(o[A.LABEL]) for o in scene.sealkeep_objects())
    assert not any("set" in label or "manifest" in label for label in labels), labels


def test_no_sealkeep_object_gives_its_value(scene: Scene) -> None:
    for obj in scene.sealkeep_objects():
        label = str(obj[A.LABEL])
        scene.read_everything(f"C_GetAttributeValue on {label}", obj)
        assert obj[A.SENSITIVE] is True and obj[A.EXTRACTABLE] is False, label
    assert scene.leaks == []


WEAK_TEMPLATES: list[dict[Any, Any]] = [
    {A.SENSITIVE: False, A.EXTRACTABLE: True},
    {A.SENSITIVE: False},
    {A.EXTRACTABLE: True, A.SENSITIVE: True},
    {A.DECRYPT: True, A.ENCRYPT: True, A.SENSITIVE: True, A.EXTRACTABLE: False},
    {A.SIGN: True, A.VERIFY: True, A.SENSITIVE: True, A.EXTRACTABLE: False},
    {A.DERIVE: True, A.SENSITIVE: True, A.EXTRACTABLE: False},
    {A.SENSITIVE: True, A.EXTRACTABLE: False, A.WRAP: True, A.UNWRAP: True, A.MODIFIABLE: True},
    {A.SENSITIVE: True, A.EXTRACTABLE: False, A.WRAP: True, A.UNWRAP: True, A.COPYABLE: True},
]


def _unwrap(key: Any, blob: bytes, key_type: KeyType, extra: dict[Any, Any]) -> Any:
    template = {A.TOKEN: False, **extra}
    return key.unwrap_key(
        ObjectClass.SECRET_KEY,
        key_type,
        blob,
        mechanism=KWP,
        store=False,
        capabilities=0,
        template=template,
    )


def test_the_domain_keys_unwrap_set_keys_under_no_weaker_template(scene: Scene) -> None:
    blobs = {"the set's KEK": scene.wrapped_kek}
    if scene.wrapped_manifest_key is not None:
        blobs["the set's manifest key"] = scene.wrapped_manifest_key
    domain_keys = [o for o in scene.sealkeep_objects() if o[A.TOKEN]]
    for key, (what, blob), extra, key_type in itertools.product(
        domain_keys, blobs.items(), WEAK_TEMPLATES, (KeyType.AES, KeyType.GENERIC_SECRET)
    ):
        path = f"C_UnwrapKey of {what} with {key[A.LABEL]} under {extra}"
        before = scene.session_handles()
        try:
            got = _unwrap(key, blob, key_type, extra)
        except (PKCS11Error, AttributeError):
            scene.loot(path, before)
            continue
        scene.read_everything(path, got)
        _try_as_oracle(scene, path, got)
        _try_wrapping_out(scene, path, got)
        got.destroy()
    assert scene.leaks == []


def _attacker_wrap_key(session: Any) -> tuple[Any, bytes]:
    """An AES key the attacker knows the value of, that wraps."""
    value = bytes(range(200, 232))
    key = session.create_object(
        {
            A.CLASS: ObjectClass.SECRET_KEY,
            A.KEY_TYPE: KeyType.AES,
            A.TOKEN: False,
            A.VALUE: value,
            A.SENSITIVE: False,
            A.EXTRACTABLE: True,
            A.WRAP: True,
            A.UNWRAP: True,
            A.ENCRYPT: True,
            A.DECRYPT: True,
        }
    )
    return key, value


def _try_wrapping_out(scene: Scene, path: str, key: Any) -> None:
    """C_WrapKey of ``key`` with a key whose value the attacker knows."""
    own, value = _attacker_wrap_key(scene.session)
    try:
        wrapped = bytes(own.wrap_key(key, mechanism=KWP))
    except (PKCS11Error, AttributeError):
        return
    finally:
        own.destroy()
    scene.check(f"{path}, then C_WrapKey with the attacker's key", _unwrap_offline(value, wrapped))


def _unwrap_offline(key: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap_with_padding(key, wrapped)
    except InvalidUnwrap:
        return b""


def _ecb_unwrap(decrypt_block: Callable[[bytes], bytes], blob: bytes) -> bytes:
    """RFC 5649 unwrap with nothing but an AES-ECB decryption oracle."""
    n = len(blob) // 8 - 1
    a, r = blob[:8], [blob[8 * (i + 1) : 8 * (i + 2)] for i in range(n)]
    for j in range(5, -1, -1):
        for i in range(n, 0, -1):
            t = n * j + i
            a = bytes(x ^ y for x, y in zip(a, struct.pack(">Q", t), strict=True))
            block = decrypt_block(a + r[i - 1])
            a, r[i - 1] = block[:8], block[8:]
    return b"".join(r)


def _try_as_oracle(scene: Scene, path: str, key: Any) -> None:
    """Use ``key`` to undo the key wrap of every blob block by block, and to MAC or derive."""
    for label, blob in scene.blobs.items():
        try:
            plain = _ecb_unwrap(lambda b: bytes(key.decrypt(b, mechanism=Mechanism.AES_ECB)), blob)
        except (PKCS11Error, AttributeError):
            break
        scene.check(f"{path}, then C_Decrypt(AES_ECB) of {label}", plain)
    try:
        # Encrypting gives nothing directly, but a key that wraps must refuse it as well.
        key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    except (PKCS11Error, AttributeError):
        pass
    else:
        scene.leaks.append(f"{path}: C_Encrypt works")
    for mechanism in (Mechanism.AES_CMAC, Mechanism.SHA256_HMAC):
        try:
            key.sign(b"\0" * 32, mechanism=mechanism)
        except (PKCS11Error, AttributeError):
            continue
        scene.leaks.append(f"{path}: C_Sign({mechanism.name}) works with a key-wrapping key")
    for mechanism in (Mechanism.AES_ECB_ENCRYPT_DATA, Mechanism.CONCATENATE_DATA_AND_BASE):
        before = scene.session_handles()
        try:
            derived = key.derive_key(
                KeyType.GENERIC_SECRET,
                256,
                mechanism=mechanism,
                mechanism_param=bytes(32),
                template={A.SENSITIVE: False, A.EXTRACTABLE: True, A.TOKEN: False},
            )
        except (PKCS11Error, AttributeError, TypeError, ValueError):
            scene.loot(f"{path}, then C_DeriveKey({mechanism.name})", before)
            continue
        scene.leaks.append(f"{path}: C_DeriveKey({mechanism.name}) works")
        derived.destroy()


FORCED_SET_KEY = {
    A.SENSITIVE: True,
    A.EXTRACTABLE: False,
    A.ENCRYPT: False,
    A.DECRYPT: False,
    A.SIGN: False,
    A.VERIFY: False,
    A.WRAP: True,
    A.UNWRAP: True,
    A.DERIVE: False,
    A.COPYABLE: False,
    A.MODIFIABLE: False,  # last: SoftHSM2 refuses what follows it in C_UnwrapKey
}


def _set_key(scene: Scene, template: dict[Any, Any]) -> Any:
    wrap_key = scene.domain_key("sealkeep-domain-wrap")
    assert wrap_key is not None
    return _unwrap(wrap_key, scene.wrapped_kek, KeyType.AES, template)


def _strongest_set_key(scene: Scene) -> Any:
    """The set's KEK with every use the domain key lets the attacker give it."""
    everything = {
        A.SENSITIVE: True,
        A.EXTRACTABLE: False,
        A.ENCRYPT: True,
        A.DECRYPT: True,
        A.SIGN: True,
        A.VERIFY: True,
        A.WRAP: True,
        A.UNWRAP: True,
        A.DERIVE: True,
    }
    try:
        return _set_key(scene, everything)
    except PKCS11Error:
        return _set_key(scene, FORCED_SET_KEY)


def test_a_set_key_opened_by_the_attacker_is_a_key_wrapping_key_and_nothing_else(
    scene: Scene,
) -> None:
    kek = _strongest_set_key(scene)
    path = "the set's KEK"
    scene.read_everything(path, kek)
    _try_as_oracle(scene, path, kek)
    _try_wrapping_out(scene, path, kek)
    for flag in (A.SENSITIVE, A.EXTRACTABLE, A.DECRYPT, A.ENCRYPT, A.SIGN, A.DERIVE):
        target = flag not in (A.SENSITIVE,)
        try:
            kek[flag] = target
        except PKCS11Error:
            pass
        else:
            if flag is not A.EXTRACTABLE or kek[A.EXTRACTABLE]:
                scene.leaks.append(f"C_SetAttributeValue({flag.name}={target}) on the KEK")
        before = scene.session_handles()
        try:
            copy = kek.copy({flag: target})
        except PKCS11Error:
            scene.loot(f"C_CopyObject({flag.name}={target}) of the KEK", before)
            continue
        scene.read_everything(f"copy of the KEK with {flag.name}={target}", copy)
        _try_as_oracle(scene, f"copy of the KEK with {flag.name}={target}", copy)
        _try_wrapping_out(scene, f"copy of the KEK with {flag.name}={target}", copy)
        copy.destroy()
    kek.destroy()
    assert scene.leaks == []


def test_the_manifest_key_opens_the_manifest_and_no_key(scene: Scene) -> None:
    if scene.wrapped_manifest_key is None:
        pytest.fail("the set has no manifest key of its own: its KEK seals the manifest too")
    seal_key = scene.domain_key("sealkeep-domain-seal")
    assert seal_key is not None
    forced = {
        A.SENSITIVE: True,
        A.EXTRACTABLE: False,
        A.ENCRYPT: True,
        A.DECRYPT: True,
        A.SIGN: False,
        A.VERIFY: False,
        A.WRAP: False,
        A.UNWRAP: False,
        A.DERIVE: False,
        A.COPYABLE: False,
        A.MODIFIABLE: False,
    }
    manifest_key = _unwrap(seal_key, scene.wrapped_manifest_key, KeyType.AES, forced)
    path = "the set's manifest key"
    scene.read_everything(path, manifest_key)
    _try_as_oracle(scene, path, manifest_key)  # decrypts, but no blob is under it
    _try_wrapping_out(scene, path, manifest_key)
    for blob in (*scene.blobs.values(), scene.wrapped_kek):
        try:
            _unwrap(manifest_key, blob, KeyType.AES, {A.SENSITIVE: False, A.EXTRACTABLE: True})
        except (PKCS11Error, AttributeError):
            continue
        scene.leaks.append("the manifest key unwraps a key of the set")
    manifest_key.destroy()
    # It encrypts and decrypts, being what seals the manifest; no key of the set is under it.
    assert [leak for leak in scene.leaks if "known-" in leak or "unwraps" in leak] == []


def test_the_set_key_generated_by_backup_could_not_be_wrapped_out(scene: Scene) -> None:
    """A new KEK lives only in the backup's session, never as a token object."""
    for obj in scene.session.get_objects({A.TOKEN: True}):
        assert not str(obj[A.LABEL]).startswith(("sealkeep-set", "sealkeep-manifest"))
    assert scene.session_handles() == set()


def test_a_set_key_gives_only_what_a_restore_gives(scene: Scene) -> None:
    """The open path (see the module docstring): it yields keys recorded extractable only."""
    kek = _set_key(scene, FORCED_SET_KEY)
    opened = authenticate_copy(scene.hsm_session, scene.set_data)
    extractable = {e.label for e in opened.entries if e.attributes.get(int(A.EXTRACTABLE))}
    for entry in opened.entries:
        if entry.wrapped is None or entry.key_type is None:
            continue
        before = scene.session_handles()
        try:
            key = kek.unwrap_key(
                ObjectClass(entry.object_class),
                KeyType(entry.key_type),
                entry.wrapped,
                mechanism=KWP,
                store=False,
                capabilities=0,
                template={A.TOKEN: False, A.SENSITIVE: False, A.EXTRACTABLE: True},
            )
        except PKCS11Error:
            scene.loot(f"unwrap of {entry.label}", before)
            continue
        scene.read_everything(f"unwrap of {entry.label} as non-sensitive", key)
        key.destroy()
        assert entry.label in extractable, entry.label
    kek.destroy()
    assert all(leak.split(": ")[-1].startswith("known-") for leak in scene.leaks)


def test_domain_create_says_what_the_token_does_not_enforce(scene: Scene) -> None:
    unenforced = scene.hsm_session.probe_protections()
    assert any("CKA_UNWRAP_TEMPLATE inside another" in text for text in unenforced)
    assert any("security officer" in text for text in unenforced)
    assert scene.session_handles() == set()  # the probes leave nothing behind


def _aes_ecb_decrypt(key: bytes, block: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return decryptor.update(block) + decryptor.finalize()


def test_the_ecb_oracle_path_works_when_a_key_allows_it() -> None:
    """The attack of :func:`_ecb_unwrap` is real: with decryption it undoes a key wrap."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    kek, key = bytes(range(32)), bytes(range(50, 82))
    blob = aes_key_wrap_with_padding(kek, key)
    assert _ecb_unwrap(lambda b: _aes_ecb_decrypt(kek, b), blob)[: len(key)] == key
