"""Checks of the drive's object store (device/fw/store.py), for both interpreters.

On the MicroPython unix port: ``micropython store_checks.py DIR`` runs every check in a
fresh folder under DIR and prints ``ALL OK``. Under CPython, test_store_unixport.py runs
the same functions with pytest. Only what both interpreters have is used here.
"""

import hashlib
import os
import sys

from fw.store import HEADER, Store, StoreError, name_ok


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def blob(n: int, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


def store(root: str, capacity: "int | None" = 1 << 20) -> Store:
    return Store(root, capacity, bytearray(512))


def fails(kind: str, fn, *args: object) -> StoreError:
    try:
        fn(*args)
    except StoreError as exc:
        assert exc.kind == kind, (exc.kind, kind, exc.text)
        return exc
    raise AssertionError("no " + kind)


def files(path: str) -> "list[str]":
    return sorted(os.listdir(path))


def put_all(st: Store, name: str, data: bytes, step: int = 1000) -> None:
    offset = st.put_open(name, len(data), sha(data))
    while offset < len(data):
        offset = st.put_write(offset, data[offset : offset + step])
    assert st.put_commit(name) == (sha(data), len(data))


def read_all(st: Store, name: str, size: int) -> bytes:
    buf = bytearray(700)
    out = b""
    offset = 0
    while True:
        n = st.read(name, offset, memoryview(buf))
        if not n:
            break
        out += bytes(buf[:n])
        offset += n
    assert offset == size
    return out


def check_put_read_stat(root: str) -> None:
    st = store(root)
    data = blob(5000)
    put_all(st, "a.bin", data)
    assert files(root + "/tmp") == []
    assert files(root + "/obj") == ["a.bin"]
    assert os.stat(root + "/obj/a.bin")[6] == HEADER + len(data)
    assert st.stat("a.bin") == (len(data), sha(data))
    assert read_all(st, "a.bin", len(data)) == data
    buf = bytearray(10)
    assert st.read("a.bin", 4995, memoryview(buf)) == 5
    assert bytes(buf[:5]) == data[4995:]
    assert st.read("a.bin", 5000, memoryview(buf)) == 0
    exc = fails("BAD_OFFSET", st.read, "a.bin", 5001, memoryview(buf))
    assert exc.expected == 5000
    fails("NOT_FOUND", st.stat, "nope")
    fails("NOT_FOUND", st.read, "nope", 0, memoryview(buf))
    empty = b""
    put_all(st, "empty", empty)
    assert st.stat("empty") == (0, sha(empty))
    assert st.verify("empty") == (sha(empty), 0, True)


def check_resume(root: str) -> None:
    data = blob(10000, 2)
    st = store(root)
    assert st.put_open("r", len(data), sha(data)) == 0
    assert st.put_write(0, data[:3000]) == 3000
    # Reopening the same object in the same store continues where it is.
    assert st.put_open("r", len(data), sha(data)) == 3000
    assert st.put_write(3000, data[3000:4000]) == 4000
    # A restart: a new store over the same files, the put forgotten.
    st.put_abort()
    st = store(root)
    fails("NO_PUT_OPEN", st.put_write, 4000, data[4000:])
    assert st.put_open("r", len(data), sha(data)) == 4000
    exc = fails("BAD_OFFSET", st.put_write, 3000, data[3000:4000])
    assert exc.expected == 4000
    assert st.put_write(4000, data[4000:]) == len(data)
    assert st.put_commit("r") == (sha(data), len(data))
    assert read_all(st, "r", len(data)) == data


def check_resume_other_object(root: str) -> None:
    st = store(root)
    one = blob(3000, 3)
    two = blob(3000, 4)
    st.put_open("x", len(one), sha(one))
    st.put_write(0, one[:1000])
    st.put_abort()
    # Same name, different content: start over.
    assert st.put_open("x", len(two), sha(two)) == 0
    assert st.put_write(0, two) == len(two)
    assert st.put_commit("x") == (sha(two), len(two))


def check_digest_mismatch(root: str) -> None:
    st = store(root)
    data = blob(2000, 5)
    st.put_open("d", len(data), sha(b"something else"))
    st.put_write(0, data)
    fails("DIGEST_MISMATCH", st.put_commit, "d")
    assert files(root + "/tmp") == []
    assert files(root + "/obj") == []
    fails("NO_PUT_OPEN", st.put_commit, "d")


def check_commit_rules(root: str) -> None:
    st = store(root)
    data = blob(2000, 6)
    fails("NO_PUT_OPEN", st.put_commit, "c")
    st.put_open("c", len(data), sha(data))
    fails("NO_PUT_OPEN", st.put_commit, "other")
    exc = fails("BAD_OFFSET", st.put_commit, "c")
    assert exc.expected == 0
    st.put_write(0, data[:1500])
    fails("BAD_SIZE", st.put_write, 1500, data[1500:] + b"x")
    exc = fails("BAD_OFFSET", st.put_commit, "c")
    assert exc.expected == 1500
    fails("BAD_SIZE", st.put_open, "c", len(data), b"short")


def check_replace_at_commit(root: str) -> None:
    st = store(root)
    old = blob(3000, 7)
    new = blob(2500, 8)
    put_all(st, "same", old)
    st.put_open("same", len(new), sha(new))
    st.put_write(0, new[:1000])
    # The old object stays whole until the new one commits.
    assert read_all(st, "same", len(old)) == old
    st.put_write(1000, new[1000:])
    assert read_all(st, "same", len(old)) == old
    st.put_commit("same")
    assert st.stat("same") == (len(new), sha(new))
    assert read_all(st, "same", len(new)) == new


def check_full(root: str) -> None:
    st = store(root, capacity=10000)
    assert st.space() == (10000, 10000, 0)
    data = blob(6000, 9)
    put_all(st, "f1", data)
    assert st.space()[1] == 10000 - HEADER - 6000
    big = blob(5000, 10)
    exc = fails("FULL", st.put_open, "f2", len(big), sha(big))
    assert "needed" in exc.text
    assert files(root + "/tmp") == []  # refused before writing anything
    small = blob(3000, 11)
    st.put_open("f3", len(small), sha(small))
    assert st.space()[1] == 10000 - 2 * HEADER - 6000 - 3000  # the open put is reserved
    st.put_write(0, small[:1000])
    assert st.space()[1] == 10000 - 2 * HEADER - 6000 - 3000
    st.put_abort()
    # An abandoned put is dropped when room is needed for another.
    other = blob(3900 - 2 * HEADER, 12)
    put_all(st, "f4", other)
    assert files(root + "/tmp") == []
    st.delete("f1")
    assert st.space()[1] == 10000 - HEADER - len(other)


def check_names(root: str) -> None:
    good = ["a", "A-Z_0.9", "x" * 64, "bdk-2024.sk", "a..b"]
    bad = ["", ".hidden", "..", "a/b", "/abs", "x" * 65, "sp ace", "\u00e4", "a\\b", "a\x00", 7]
    for name in good:
        assert name_ok(name), name
    for name in bad:
        assert not name_ok(name), name
    st = store(root)
    for name in ("../escape", ".x", "a/b"):
        fails("BAD_NAME", st.put_open, name, 1, sha(b"x"))
        fails("BAD_NAME", st.stat, name)
        fails("BAD_NAME", st.delete, name)
        fails("BAD_NAME", st.verify, name)
    assert files(root) == ["obj", "seq", "tmp"]


def check_list_paging(root: str) -> None:
    st = store(root)
    names = [f"n{i:02d}" for i in range(23)] + ["other", "z"]
    for i, name in enumerate(reversed(names)):
        put_all(st, name, blob(i, i))
    seen = []
    after = ""
    pages = 0
    while True:
        entries, more = st.list(after, "", 5)
        assert len(entries) <= 5
        seen += entries
        pages += 1
        if not more:
            break
        after = entries[-1][0]
    assert pages == 5
    assert [e[0] for e in seen] == sorted(names)
    sizes = dict((e[0], e[1]) for e in seen)
    assert sizes["z"] == 0 and sizes["n00"] == len(names) - 1
    entries, more = st.list("", "n1", 50)
    assert [e[0] for e in entries] == [f"n{i:02d}" for i in range(10, 20)] and not more
    entries, more = st.list("n15", "n1", 3)
    assert [e[0] for e in entries] == ["n16", "n17", "n18"] and more
    assert st.list("zz", "", 5) == ([], False)


def check_delete_verify(root: str) -> None:
    st = store(root)
    data = blob(4000, 13)
    put_all(st, "v", data)
    assert st.verify("v") == (sha(data), len(data), True)
    # Damage one byte on flash: verify says so.
    with open(root + "/obj/v", "r+b") as f:
        f.seek(HEADER + 1234)
        f.write(b"\x00" if data[1234] else b"\x01")
    digest, size, intact = st.verify("v")
    assert size == len(data) and digest != sha(data) and not intact
    # A truncated object is not intact either.
    with open(root + "/obj/v", "r+b") as f:
        head = f.read(HEADER)
    with open(root + "/obj/v", "wb") as f:
        f.write(head + data[:100])
    assert st.verify("v") == (sha(data[:100]), 100, False)
    st.delete("v")
    fails("NOT_FOUND", st.delete, "v")
    fails("NOT_FOUND", st.verify, "v")
    assert files(root + "/obj") == []


def check_read_after_replace_and_delete(root: str) -> None:
    st = store(root)
    one = blob(1500, 14)
    two = blob(1600, 15)
    put_all(st, "k", one)
    buf = bytearray(100)
    st.read("k", 0, memoryview(buf))  # keeps k open for the next READ
    put_all(st, "k", two)
    assert read_all(st, "k", len(two)) == two
    st.delete("k")
    fails("NOT_FOUND", st.read, "k", 0, memoryview(buf))


def check_wipe(root: str) -> None:
    st = store(root)
    put_all(st, "w1", blob(100))
    data = blob(1000)
    st.put_open("w2", len(data), sha(data))
    st.put_write(0, data[:10])
    st.wipe()
    assert files(root + "/obj") == [] and files(root + "/tmp") == []
    fails("NO_PUT_OPEN", st.put_write, 10, data[10:])


def number_of(root: str, path: str) -> int:
    with open(root + path) as f:
        return int(f.read())


def check_commit_numbers(root: str) -> None:
    """Sets are numbered in commit order; newer() counts the later ones still held."""
    st = Store(root, 1 << 20, bytearray(512), "set-")
    put_all(st, "share", blob(50))  # not a set: no number
    for name in ("set-c", "set-a", "set-b"):  # commit order, not name order
        put_all(st, name, blob(60))
    assert [st.newer(n) for n in ("set-c", "set-a", "set-b")] == [2, 1, 0]
    assert st.newer("share") == -1
    fails("NOT_FOUND", st.newer, "set-z")
    assert number_of(root, "/seq/.n") == 3
    assert files(root + "/seq") == [".n", "set-a", "set-b", "set-c"]
    st.delete("set-b")  # its number goes with it; the counter stays
    assert st.newer("set-c") == 1 and files(root + "/seq") == [".n", "set-a", "set-c"]
    # A fresh boot reads the counter; a put cut before its rename leaves a number skipped,
    # never reused.
    st = Store(root, 1 << 20, bytearray(512), "set-")
    put_all(st, "set-d", blob(70))
    assert number_of(root, "/seq/set-d") == 4 and number_of(root, "/seq/.n") == 4
    data = blob(80)
    st.put_open("set-e", len(data), sha(data))
    st.put_write(0, data)
    os.mkdir(root + "/obj/set-e")  # in the way: the rename fails, as if the power went
    try:
        st.put_commit("set-e")
        raise AssertionError("committed over a folder")
    except OSError:
        pass
    os.rmdir(root + "/obj/set-e")
    assert not st.exists("set-e") and number_of(root, "/seq/.n") == 5
    # The counter lost (a cut inside its own rename): the numbers in use say where it was.
    os.remove(root + "/seq/.n")
    st = Store(root, 1 << 20, bytearray(512), "set-")
    put_all(st, "set-f", blob(90))
    assert number_of(root, "/seq/set-f") > number_of(root, "/seq/set-d")
    assert st.newer("set-d") == 1 and st.newer("set-c") == 3
    # An object stored before the drive numbered sets has no number, and counts for none.
    os.remove(root + "/seq/set-a")
    assert st.newer("set-a") == -1 and st.newer("set-c") == 2
    st.wipe()
    assert files(root + "/seq") == []


def check_filesystem_space(root: str) -> None:
    st = store(root, capacity=None)
    cap, free, slack = st.space()
    assert cap > 0 and 0 <= free <= cap and slack > 0
    data = blob(1000)
    fails("FULL", st.put_open, "huge", cap + 1, sha(data))


CHECKS = [
    check_put_read_stat,
    check_resume,
    check_resume_other_object,
    check_digest_mismatch,
    check_commit_rules,
    check_replace_at_commit,
    check_full,
    check_names,
    check_list_paging,
    check_delete_verify,
    check_read_after_replace_and_delete,
    check_wipe,
    check_commit_numbers,
    check_filesystem_space,
]


def run_all(base: str) -> None:
    for check in CHECKS:
        root = base + "/" + check.__name__
        os.mkdir(root)
        check(root)
        print("ok", check.__name__)


if __name__ == "__main__":
    run_all(sys.argv[1])
    print("ALL OK")
