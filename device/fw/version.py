"""The firmware's version, security counter and the vendor key it trusts.

``VERSION`` is (version text, security counter, the vendor's Ed25519 public key or None):
one name, because a drive keeps every name a module assigns in its heap for good.
``sealkeep firmware build`` writes its own copy of this module into every image. This one
is the source tree's development build: it trusts no vendor key, so it accepts no update.
"""

VERSION: "tuple[str, int, bytes | None]" = ("1.0.0", 0, None)
