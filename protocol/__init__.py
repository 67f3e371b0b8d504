"""Wire protocol shared by the sealkeep host and the drive firmware.

Everything in this package runs unchanged under CPython and MicroPython: it uses only
builtins, ``binascii``, ``hashlib`` and ``struct``, and relative imports.
"""
