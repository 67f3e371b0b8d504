"""Everything that differs between a real board and the MicroPython unix port.

The binary stdio channel, serial number, flash root, the user-presence button and reboot
live here; nothing else in the firmware looks at the platform. On the unix port (the
emulator) the environment sets ``SEALKEEP_FLASH`` (flash root), ``SEALKEEP_SERIAL``,
``SEALKEEP_CAPACITY`` (bytes; else the filesystem's figures), ``SEALKEEP_BACKOFF_MS``,
``SEALKEEP_MAX_FRAME`` and ``SEALKEEP_DEVICE_KEY`` (a file outside the flash); the button
is a file named ``button`` in the flash root, consumed
when used.
"""

import binascii
import os
import select
import sys

try:
    import machine
except ImportError:
    machine = None  # type: ignore[assignment]

UNIX = sys.platform in ("linux", "darwin")
# The user-presence button: the emulator's is a file; a board with one sets its pin id
# here (pressed pulls it low) and init() makes it a machine.Pin. None: no button.
BUTTON: object = True if UNIX else None

stdin = sys.stdin.buffer
stdout = sys.stdout.buffer
poll = select.poll()
poll.register(stdin, select.POLLIN)


def env(name: str, n: int = 0) -> int:
    """An integer setting from the environment (unix port), else n."""
    try:
        return int(os.getenv(name) or n)
    except (AttributeError, ValueError):
        return n


def init() -> None:
    global BUTTON
    if not UNIX:
        import micropython

        micropython.kbd_intr(-1)  # Ctrl-C is data on this channel
        if BUTTON is not None:
            BUTTON = machine.Pin(BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)  # type: ignore[call-arg, attr-defined]
    # A drive with an installed image (a boot record "A P S F"; see fw/update.py). A new
    # image's first boot (the file "trying" is there) goes on, on trial. A later boot on
    # trial (confirmed by its owner, or never), or an image waiting to be installed: that
    # is fw.update's, before the link takes the heap, and it restarts the drive.
    try:
        with open(root() + "/slot/record") as f:
            state = int(f.read(5)[4:])
    except (OSError, ValueError):
        return
    try:
        if state:
            os.remove(root() + "/slot/trying")
            return
        os.stat(root() + "/obj/sealkeep-firmware.img")  # fw.update's image
    except OSError:
        if not state:
            return
    from fw import update

    update.run()


def log(text: str) -> None:
    """A line on stderr, never on the data channel."""
    sys.stderr.write("sealkeep drive: " + text + "\n")


def root() -> str:
    """The flash root (created if missing); "" is the board's "/"."""
    if not UNIX:
        return ""
    path = (os.getenv("SEALKEEP_FLASH") or "flash").rstrip("/")
    p = ""
    for part in path.split("/"):
        p += part
        if part:
            try:
                os.stat(p)
            except OSError:
                os.mkdir(p)
        p += "/"
    return path


def serial() -> str:
    """SEALKEEP_SERIAL, else the flash's ``serial`` file, else from the chip's unique id
    (the emulator makes one up once and keeps it in that file). A serial breaking the rule
    the host checks (protocol.serials) is logged and replaced by the chip's."""
    import protocol
    from protocol.serials import serial_problem

    s = os.getenv("SEALKEEP_SERIAL") if UNIX else None
    path = root() + "/serial"
    try:
        with open(path) as f:
            s = s or f.read().strip()
    except OSError:
        pass
    problem = serial_problem(s) if s else None
    # asked once, at start: give the heap back, as fw.ids does with the protocol tables
    del sys.modules["protocol.serials"], protocol.serials
    if problem is not None:
        log("ignoring serial " + repr(s) + ": " + problem)
        s = None
    if not s:
        uid = machine.unique_id() if hasattr(machine, "unique_id") else os.urandom(5)
        s = "SK-" + binascii.hexlify(uid).decode().upper()
        with open(path, "w") as f:
            f.write(s)
    return s


def device_key() -> "bytes | None":
    """A key of this board that its flash does not hold, to seal the drive's secrets.

    The emulator's is a file outside the flash folder (``SEALKEEP_DEVICE_KEY``). Stock
    MicroPython reaches no eFuse or OTP key on the boards it runs on, so a board returns
    None and its secrets lie in its flash as they are (see device/README.md)."""
    if not UNIX:
        return None
    path = os.getenv("SEALKEEP_DEVICE_KEY")
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            key = f.read(64)
    except OSError:
        return None
    return key if len(key) >= 32 else None


def presence() -> bool:
    """Whether the user-presence button is pressed (the emulator's file is consumed)."""
    if UNIX:
        try:
            os.remove(root() + "/button")
            return True
        except OSError:
            return False
    return BUTTON is not None and BUTTON.value() == 0  # type: ignore[attr-defined]


def read_into(data: bytearray, n: int) -> "int | None":
    """Bytes from the host into data: a count, None if none came within n ms, 0 at the end."""
    if not poll.poll(n):
        return None
    if UNIX:
        return stdin.readinto(data)  # non-blocking: what is there
    # A board's readinto waits for the whole buffer: take bytes while they last.
    n = 0
    one = bytearray(1)
    while n < len(data) and poll.poll(0) and stdin.readinto(one):
        data[n] = one[0]
        n += 1
    return n or None  # USB stdio does not end


def write_all(data: memoryview) -> None:
    """Write every byte to the host, waiting while the channel is full."""
    while len(data):
        n = stdout.write(data)
        if n:
            data = data[n:]
        else:  # a non-blocking channel that is full
            p = select.poll()
            p.register(stdout, select.POLLOUT)
            p.poll(100)


def reboot() -> None:
    """Restart the firmware: the unix port exits 75 and the emulator starts it again."""
    if UNIX:
        sys.exit(75)
    machine.reset()  # type: ignore[attr-defined]
