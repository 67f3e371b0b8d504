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

Every test runs on SoftHSM2 and on openCryptoki's soft token (portable profile: AES-CBC-PAD
with the IV before each wrapped key). openCryptoki 3.8.1 refuses CKA_UNWRAP_TEMPLATE, so
``domain create`` warns that a PIN holder can unwrap a set's KEK as a key that decrypts and
read every key of the set (docs/threat-model.md): there the tests that SoftHSM2 passes with
no leak assert instead that this attack works, and gives every backed-up key.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import padding, serialization
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
from sealkeep.hsm import HsmSession
from sealkeep.hsm_caps import PORTABLE, Profile, profile_named
from sealkeep.pins import Passphrases

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import Token

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cheap_kdf")]
pytest_plugins = ["hsm_fixtures"]

KWP = Mechanism.AES_KEY_WRAP_PAD
CBC_IV_LEN = PORTABLE.iv_len
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
    profile: Profile
    copyable: bool  # whether the token takes CKA_COPYABLE at all
    leaks: list[str] = field(default_factory=list)

    @property
    def portable(self) -> bool:
        return self.profile == PORTABLE

    @property
    def unwrap_templates(self) -> bool:
        """Whether the domain keys force what the keys they unwrap may do."""
        return not self.portable

    def fit(self, template: dict[Any, Any]) -> dict[Any, Any]:
        """``template`` without the attributes the token refuses outright."""
        return {k: v for k, v in template.items() if self.copyable or k != A.COPYABLE}

    def reveals(self, data: bytes) -> str | None:
        """Which secret ``data`` gives away, directly or as a key that unwraps a blob."""
        for name, value in self.secrets.items():
            if value in data:
                return name
        if len(data) in (16, 24, 32):
            for label, blob in self.blobs.items():
                plain = _unwrap_offline(data, blob, self.profile)
                if not plain:
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
def scene(token: Token, emulated_drives: StartDrives, tmp_path: Path) -> Iterator[Scene]:
    emulator = emulated_drives(3, dir=tmp_path / "drives")
    passphrases = Passphrases(
        entries={d.serial: f"custodian {d.serial}: quiet harbour 42" for d in emulator.drives}
    )
    with token.open() as session:
        with DriveGroup([d.port for d in emulator.drives]) as group:
            created = create_domain(session, group.drives, passphrases)
            assert created.profile.name == token.profile
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
            profile=profile_named(token.profile),
            copyable=session.traits().copyable,
        )


def test_no_set_key_is_left_in_the_slot(scene: Scene) -> None:
    assert scene.session_handles() == set()
    labels = sorted(str(o[A.LABEL]) for o in scene.sealkeep_objects())
    assert not any("set" in label or "manifest" in label for label in labels), labels


def _pin_holder_reads_the_set(scene: Scene) -> set[str]:
    """The attack the threat model admits where the domain keys carry no unwrap template:
    the set's KEK unwrapped as a sensitive key that decrypts, then every wrapped key of the
    set decrypted in the HSM. The secrets it gives."""
    kek = _set_key(scene, {A.SENSITIVE: True, A.DECRYPT: True, A.UNWRAP: True})
    found: set[str] = set()
    for blob in scene.blobs.values():
        plain = _use_to_unwrap(kek, blob, scene.profile)
        found |= {name for name, value in scene.secrets.items() if value in plain}
    kek.destroy()
    return found


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


def _unwrap(
    key: Any,
    blob: bytes,
    key_type: KeyType,
    extra: dict[Any, Any],
    profile: Profile,
    object_class: ObjectClass = ObjectClass.SECRET_KEY,
) -> Any:
    """C_UnwrapKey of a blob of the set, with the mechanism of its profile."""
    template = {A.TOKEN: False, **extra}
    if profile == PORTABLE:
        return key.unwrap_key(
            object_class,
            key_type,
            blob[CBC_IV_LEN:],
            mechanism=Mechanism.AES_CBC_PAD,
            mechanism_param=blob[:CBC_IV_LEN],
            store=False,
            capabilities=0,
            template=template,
        )
    return key.unwrap_key(
        object_class,
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
            got = _unwrap(key, blob, key_type, extra, scene.profile)
        except (PKCS11Error, AttributeError):
            scene.loot(path, before)
            continue
        scene.read_everything(path, got)
        _try_as_oracle(scene, path, got)
        _try_wrapping_out(scene, path, got)
        got.destroy()
    if scene.unwrap_templates:
        assert scene.leaks == []
    else:
        # What the threat model admits: the set's KEK unwraps as a key that decrypts.
        assert any("C_Decrypt" in leak for leak in scene.leaks), scene.leaks
        assert _pin_holder_reads_the_set(scene) == set(scene.secrets)


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
    iv = bytes(range(CBC_IV_LEN))
    try:
        if scene.portable:
            body = own.wrap_key(key, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
            wrapped = iv + bytes(body)
        else:
            wrapped = bytes(own.wrap_key(key, mechanism=KWP))
    except (PKCS11Error, AttributeError):
        return
    finally:
        own.destroy()
    scene.check(
        f"{path}, then C_WrapKey with the attacker's key",
        _unwrap_offline(value, wrapped, scene.profile),
    )


def _unwrap_offline(key: bytes, wrapped: bytes, profile: Profile) -> bytes:
    """A blob unwrapped outside the HSM with a key value; empty when it does not unwrap."""
    if profile == PORTABLE:
        if len(wrapped) < 2 * CBC_IV_LEN or len(wrapped) % 16:
            return b""
        cipher = Cipher(algorithms.AES(key), modes.CBC(wrapped[:CBC_IV_LEN])).decryptor()
        padded = cipher.update(wrapped[CBC_IV_LEN:]) + cipher.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            return b""
    try:
        return aes_key_unwrap_with_padding(key, wrapped)
    except (InvalidUnwrap, ValueError):
        return b""


def _use_to_unwrap(key: Any, blob: bytes, profile: Profile) -> bytes:
    """A blob of the set decrypted in the HSM with ``key`` (raises PKCS11Error when it may
    not): C_Decrypt with the profile's own mechanism, else AES key wrap undone block by
    block with AES-ECB."""
    if profile == PORTABLE:
        return bytes(
            key.decrypt(
                blob[CBC_IV_LEN:],
                mechanism=Mechanism.AES_CBC_PAD,
                mechanism_param=blob[:CBC_IV_LEN],
            )
        )
    return _ecb_unwrap(lambda b: bytes(key.decrypt(b, mechanism=Mechanism.AES_ECB)), blob)


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
    decrypt = "AES_CBC_PAD" if scene.portable else "AES_ECB"
    for label, blob in scene.blobs.items():
        try:
            plain = _use_to_unwrap(key, blob, scene.profile)
        except (PKCS11Error, AttributeError):
            break
        scene.check(f"{path}, then C_Decrypt({decrypt}) of {label}", plain)
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
    return _unwrap(wrap_key, scene.wrapped_kek, KeyType.AES, scene.fit(template), scene.profile)


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


def _reads_a_known_key(leaks: list[str]) -> bool:
    return any(leak.split(": ")[-1].startswith("known-") for leak in leaks)


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
    if scene.unwrap_templates:
        assert scene.leaks == []
    else:
        # What the threat model admits: the KEK decrypts, and gives the set's keys.
        assert any("C_Decrypt" in leak for leak in scene.leaks), scene.leaks
        assert _reads_a_known_key(scene.leaks), scene.leaks


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
    manifest_key = _unwrap(
        seal_key, scene.wrapped_manifest_key, KeyType.AES, scene.fit(forced), scene.profile
    )
    path = "the set's manifest key"
    scene.read_everything(path, manifest_key)
    _try_as_oracle(scene, path, manifest_key)  # decrypts, but no blob is under it
    _try_wrapping_out(scene, path, manifest_key)
    for blob in (*scene.blobs.values(), scene.wrapped_kek):
        try:
            _unwrap(
                manifest_key,
                blob,
                KeyType.AES,
                {A.SENSITIVE: False, A.EXTRACTABLE: True},
                scene.profile,
            )
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
    weakest = {A.SENSITIVE: False, A.EXTRACTABLE: True}
    if scene.portable:
        # openCryptoki 3.8.1 refuses both as "read only" in C_UnwrapKey; without them its
        # keys come out non-sensitive and extractable.
        weakest = {}
    extractable = {e.label for e in opened.entries if e.attributes.get(int(A.EXTRACTABLE))}
    for entry in opened.entries:
        if entry.wrapped is None or entry.key_type is None:
            continue
        before = scene.session_handles()
        try:
            key = _unwrap(
                kek,
                entry.wrapped,
                KeyType(entry.key_type),
                weakest,
                scene.profile,
                ObjectClass(entry.object_class),
            )
        except PKCS11Error:
            scene.loot(f"unwrap of {entry.label}", before)
            continue
        scene.read_everything(f"unwrap of {entry.label} as non-sensitive", key)
        key.destroy()
        assert entry.label in extractable, entry.label
    kek.destroy()
    assert all(leak.split(": ")[-1].startswith("known-") for leak in scene.leaks)
    if scene.portable:
        assert _reads_a_known_key(scene.leaks), scene.leaks


def test_domain_create_says_what_the_token_does_not_enforce(scene: Scene) -> None:
    unenforced = scene.hsm_session.probe_protections(scene.profile)
    if scene.unwrap_templates:
        assert any("CKA_UNWRAP_TEMPLATE inside another" in text for text in unenforced)
    else:
        (missing,) = [t for t in unenforced if "has no CKA_UNWRAP_TEMPLATE" in t]
        assert "unwrap a set's KEK as a key that decrypts" in missing
        assert "every key of the set in the clear" in missing
        assert any("has no CKA_COPYABLE" in text for text in unenforced)
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
