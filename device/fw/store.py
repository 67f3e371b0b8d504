"""The object store on the flash filesystem, with no protocol knowledge.

``obj/NAME`` holds a committed object and ``tmp/NAME`` a put in progress, both as a 40-byte
header (SHA-256 of the data, size u64 BE) and the data. A put appends to ``tmp/NAME``
(resumable: the store says how much it holds), its digest is checked at commit and the file
renamed into ``obj/``: nobody sees a half-written object, and an existing object is replaced
only then. Errors are ``StoreError(kind, text, expected)``; kinds: BAD_NAME, NOT_FOUND, FULL,
BAD_OFFSET, BAD_SIZE, DIGEST_MISMATCH, NO_PUT_OPEN. Runs under MicroPython and CPython.

Objects whose names start with ``counted`` (the sets) are numbered in commit order: the
counter ``seq/.n`` goes up, then ``seq/NAME`` takes the number, then the object appears,
so a power cut can skip a number, never give one twice. Should the counter be lost, the
highest number in ``seq/`` says where it stood.
"""

import hashlib
import os

HEADER = 40


class StoreError(Exception):
    def __init__(self, kind: str, text: str, expected: "int | None" = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.expected = expected


def name_ok(name: object) -> bool:
    """1 to 64 of [A-Za-z0-9._-], not starting with a dot: never a path."""
    # Bytes, not characters: MicroPython interns every character taken from a str.
    raw = name.encode() if isinstance(name, str) else b""
    if not 0 < len(raw) <= 64 or raw[0] == 46:
        return False
    for c in raw:
        if not (97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c in (45, 46, 95)):
            return False
    return True


def names(path: str):  # a generator of str
    """A directory's entries one by one (on MicroPython without a list of them all)."""
    ls = getattr(os, "ilistdir", None)
    if ls is None:
        yield from os.listdir(path)
    else:
        for entry in ls(path):
            yield entry[0]


def clear(path: str, name: str = "") -> None:
    """Remove every file in a directory but name; passes until one removes nothing, for
    filesystems that skip entries when the directory changes under a listing."""
    again = True
    while again:
        again = False
        for n in names(path):
            if n != name:
                remove(path + n)
                again = True


def fsize(path: str) -> int:
    """Size of a file, -1 if there is none."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_atomic(path: str, data: bytes) -> None:
    with open(path + ".new", "wb") as f:
        f.write(data)
    try:
        os.rename(path + ".new", path)
    except OSError:  # a filesystem whose rename does not replace
        os.remove(path)
        os.rename(path + ".new", path)


def number(path: str) -> int:
    """The number a file holds, -1 if none."""
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


class Store:
    """Objects under root. ``capacity`` None takes the filesystem's figures; ``scratch``
    is a buffer the store may use for hashing."""

    def __init__(
        self,
        root: str,
        capacity: "int | None",
        scratch: "bytearray | memoryview",
        counted: str = "",
    ) -> None:
        self.obj = root + "/obj/"
        self.tmp = root + "/tmp/"
        self.seq = root + "/seq/"
        self.counted = counted  # a name prefix: objects numbered in commit order
        self.commits = -1  # the last number given; -1: not read yet
        self.root = root or "/"
        self.capacity = capacity
        self.scratch = memoryview(scratch)
        self.put: list | None = None  # [name, size, digest, file, offset, sha]
        self.rd: list | None = None  # [name, file, size]: the object READ has open
        for d in (self.obj, self.tmp, self.seq):
            if fsize(d) < 0:
                os.mkdir(d[:-1])

    def space(self) -> "tuple[int, int, int]":
        """(capacity, free, slack): free leaves out what the open put still needs, slack
        is what a file may take beyond its size (a block)."""
        p = self.put
        free = p[4] - p[1] if p else 0
        slack = 0
        if self.capacity is None:
            st = os.statvfs(self.root)
            slack = st[1]
            cap = st[2] * slack
            free += st[4] * slack
        else:
            cap = self.capacity
            free += cap
            for d in (self.obj, self.tmp):
                for n in names(d):
                    free -= max(0, fsize(d + n))
        return cap, max(0, free), slack

    def check(self, name: str) -> None:
        if not name_ok(name):
            raise StoreError("BAD_NAME", "bad object name")

    # -- put -----------------------------------------------------------------------------

    def put_abort(self) -> None:
        """Close the open put; its temporary file stays for a later resume."""
        p = self.put
        self.put = None
        if p:
            p[3].close()

    def put_open(self, name: str, size: int, digest: "bytes | memoryview") -> int:
        """Start or resume a put; return how many bytes of it the store holds."""
        self.check(name)
        if len(digest) != 32:
            raise StoreError("BAD_SIZE", "digest must be 32 bytes")
        head = bytes(digest) + size.to_bytes(8, "big")
        p = self.put
        if p and p[0] == name and p[1] == size and p[2] == head[:32]:
            return p[4]
        self.put_abort()
        path = self.tmp + name
        have = fsize(path) - HEADER
        if have >= 0:
            with open(path, "rb") as f:
                if f.read(HEADER) != head or have > size:
                    have = -1
        need = size - have if have >= 0 else size + HEADER
        for attempt in (0, 1):
            _, free, slack = self.space()
            if need + slack <= free:
                break
            if attempt:
                raise StoreError("FULL", f"{need} bytes needed, {free} free")
            clear(self.tmp, name)  # make room: drop abandoned puts
        sha = hashlib.sha256()
        if have >= 0:
            self.hash_file(path, have, sha)
            f = open(path, "ab", 0)  # unbuffered: the file holds what was acknowledged
        else:
            have = 0
            f = open(path, "wb", 0)
            try:
                f.write(head)
            except OSError:
                f.close()
                remove(path)
                raise StoreError("FULL", "flash is full") from None
        self.put = [name, size, head[:32], f, have, sha]
        return have

    def put_write(self, offset: int, data: "bytes | memoryview") -> int:
        """Append data at offset (what the store holds); return the next offset."""
        p = self.put
        if not p:
            raise StoreError("NO_PUT_OPEN", "no put open")
        if offset != p[4]:
            raise StoreError("BAD_OFFSET", f"offset must be {p[4]}", p[4])
        n = len(data)
        if n > p[1] - offset:
            raise StoreError("BAD_SIZE", f"data past the declared size {p[1]}")
        try:
            if p[3].write(data) != n:
                raise OSError(28)
        except OSError:
            self.put_abort()  # the next PUT_OPEN takes the offset from the file
            raise StoreError("FULL", "flash is full") from None
        p[5].update(data)
        p[4] = offset + n
        return p[4]

    def put_commit(self, name: str) -> "tuple[bytes, int]":
        """Check the digest, move the object into place; return (digest, size)."""
        p = self.put
        if not p or p[0] != name:
            raise StoreError("NO_PUT_OPEN", "no put of that name open")
        if p[4] != p[1]:
            raise StoreError("BAD_OFFSET", f"incomplete: {p[4]} of {p[1]} bytes", p[4])
        self.put_abort()
        digest = p[5].digest()
        path = self.tmp + name
        if digest != p[2] or fsize(path) != HEADER + p[1]:
            remove(path)
            raise StoreError("DIGEST_MISMATCH", "data does not match its SHA-256")
        self.forget(name)
        if self.counted and name.startswith(self.counted):
            self.number(name)
        dest = self.obj + name
        try:
            os.rename(path, dest)
        except OSError:  # a filesystem whose rename does not replace
            os.remove(dest)
            os.rename(path, dest)
        return digest, p[1]

    def number(self, name: str) -> None:
        """Give name the next commit number, before it becomes visible."""
        n = self.commits
        if n < 0:  # the counter (.n), or the highest number in use if it was lost
            n = 0
            for m in names(self.seq):
                n = max(n, number(self.seq + m))
        n += 1
        write_atomic(self.seq + ".n", str(n).encode())
        self.commits = n
        with open(self.seq + name, "w") as f:
            f.write(str(n))

    def newer(self, name: str) -> int:
        """How many numbered objects committed after name are held; -1 when name has no
        number (not counted, or committed before the drive numbered objects)."""
        if not self.exists(name):
            raise StoreError("NOT_FOUND", "no such object")
        mine = number(self.seq + name) if name.startswith(self.counted) else -1
        count = 0
        for n in names(self.obj):
            if mine >= 0 and n.startswith(self.counted) and number(self.seq + n) > mine:
                count += 1
        return count if mine >= 0 else -1

    # -- read side -----------------------------------------------------------------------

    def forget(self, name: "str | None" = None) -> None:
        """Close the file READ keeps open (if it is that object's)."""
        r = self.rd
        if r and (name is None or r[0] == name):
            self.rd = None
            r[1].close()

    def open(self, name: str) -> list:
        """[name, file after the header, size, digest] of a committed object."""
        self.check(name)
        try:
            f = open(self.obj + name, "rb")
        except OSError:
            raise StoreError("NOT_FOUND", "no such object") from None
        head = f.read(HEADER)
        return [name, f, int.from_bytes(head[32:], "big"), head[:32]]

    def exists(self, name: str) -> bool:
        return fsize(self.obj + name) >= 0

    def stat(self, name: str) -> "tuple[int, bytes]":
        """(size, digest) of a committed object."""
        r = self.open(name)
        r[1].close()
        return r[2], r[3]

    def read(self, name: str, offset: int, data: memoryview) -> int:
        """Read from offset into data; return the count (0 at the end)."""
        r = self.rd
        if not r or r[0] != name:
            self.forget()
            r = self.rd = self.open(name)
        if offset > r[2]:
            raise StoreError("BAD_OFFSET", f"past the end ({r[2]} bytes)", r[2])
        want = min(len(data), r[2] - offset)
        r[1].seek(HEADER + offset)
        got = 0
        while got < want:
            n = r[1].readinto(data[got:want])
            if not n:
                break
            got += n
        return got

    def list(self, after: str, prefix: str, limit: int) -> "tuple[list, bool]":
        """Sorted [[name, size], ...] of names after `after` starting with prefix, and
        whether more follow. Holds at most limit + 1 names whatever the count."""
        best = [""] * (limit + 1)  # sorted, filled from the front; one allocation
        count = 0
        for n in names(self.obj):
            if n > after and n.startswith(prefix) and (count <= limit or n < best[limit]):
                i = min(count, limit)
                while i and best[i - 1] > n:
                    best[i] = best[i - 1]
                    i -= 1
                best[i] = n
                count = min(count + 1, limit + 1)
        entries = [[n, fsize(self.obj + n) - HEADER] for n in best[: min(count, limit)]]
        return entries, count > limit

    def delete(self, name: str) -> None:
        self.check(name)
        self.forget(name)
        try:
            os.remove(self.obj + name)
        except OSError:
            raise StoreError("NOT_FOUND", "no such object") from None
        remove(self.seq + name)

    def hash_file(self, path: str, count: int, sha: object) -> int:
        """Feed up to count data bytes (-1: all) of a file to sha; return how many."""
        buf = self.scratch
        done = 0
        with open(path, "rb") as f:
            f.seek(HEADER)
            while count < 0 or done < count:
                n = f.readinto(buf if count < 0 else buf[: min(len(buf), count - done)])
                if not n:
                    break
                sha.update(buf[:n])  # type: ignore[attr-defined]
                done += n
        return done

    def verify(self, name: str) -> "tuple[bytes, int, bool]":
        """Rehash what is stored: (digest, bytes held, intact)."""
        size, digest = self.stat(name)
        sha = hashlib.sha256()
        held = self.hash_file(self.obj + name, -1, sha)
        got = sha.digest()
        return got, held, held == size and got == digest

    def wipe(self) -> None:
        """Remove every object and temporary file."""
        self.put_abort()
        self.forget()
        clear(self.obj)
        clear(self.tmp)
        clear(self.seq)
        self.commits = -1
