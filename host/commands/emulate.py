"""``sealkeep emulate``: run emulated drives in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from types import FrameType

from .. import ui
from ..drivespec import UsageError
from ..emulator import Emulator, EmulatorError
from ..relay import parse_link

ORDER = 90

_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes, with an optional K, M, G or T suffix (powers of 1024): ``1048576``, ``64M``."""
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (give bytes, e.g. 1048576 or 64M)")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _FACTORS[unit]


def _heap(text: str) -> str:
    if not re.match(r"^[1-9][0-9]*[KkMm]?$", text):
        raise argparse.ArgumentTypeError(f"not a heap size: {text!r} (e.g. 64K)")
    return text.upper()


def _link(text: str) -> str:
    try:
        return parse_link(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"the count must be 1 to 64, not {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "emulate",
        help="run emulated drives (the firmware on the MicroPython unix port behind ptys)",
        description=(
            "Start COUNT drives, each the real firmware on the MicroPython unix port behind "
            "its own pseudo-terminal, with flash under DIR. Writes DIR/drives.json (serials "
            "and ports; use it with --drives @DIR/drives.json) and runs until SIGTERM or "
            "Ctrl-C, which stops every drive. Running again on the same DIR brings back the "
            "same drives with their contents."
        ),
    )
    p.add_argument("--count", type=_count, default=5, help="how many drives (default 5)")
    p.add_argument("--dir", required=True, help="folder for the drives' flash and drives.json")
    p.add_argument(
        "--heap", type=_heap, default="96K", help="MicroPython heap per drive (default 96K)"
    )
    p.add_argument(
        "--capacity",
        type=parse_size,
        metavar="BYTES",
        help="flash size each drive announces (e.g. 16M; default: the filesystem's space)",
    )
    p.add_argument(
        "--link",
        type=_link,
        default="raw",
        help="link model: raw (default, unpaced), usb-fs (1.2 MB/s, 1 ms) or uart:BAUD",
    )
    p.add_argument(
        "--backoff-ms",
        type=int,
        metavar="MS",
        help="base of the drives' delay after failed authentications (default: firmware's)",
    )
    p.add_argument("--seed", type=int, help="seed for the link's random faults")
    p.add_argument(
        "--firmware",
        metavar="IMAGE",
        help=(
            "run a signed firmware image (`sealkeep firmware build`): installed in slot a "
            "of each drive that has no firmware slot yet; default: the source tree's firmware"
        ),
    )
    p.add_argument(
        "--blank",
        action="store_true",
        help=(
            "start drives as a technician receives boards: stock MicroPython REPLs with "
            "nothing installed (`sealkeep firmware install` puts the firmware on them; they "
            "boot into it from then on)"
        ),
    )
    p.add_argument("--json", action="store_true", help="print drives.json instead of a table")
    p.add_argument("-v", "--verbose", action="store_true", help="log every drive start")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sealkeep emulate: %(message)s"))
    logger = logging.getLogger("sealkeep")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    watched = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
    previous = {sig: signal.signal(sig, on_signal) for sig in watched}
    emulator = Emulator(
        args.dir,
        args.count,
        heap=args.heap,
        capacity=args.capacity,
        link=args.link,
        backoff_ms=args.backoff_ms,
        seed=args.seed,
        image=args.firmware,
        blank=args.blank,
    )
    try:
        emulator.start()
        if args.json:
            ui.print_json(emulator.document())
        else:
            rows = [
                [d.serial, d.port, "blank REPL" if d.blank else "firmware", f"{d.flash}/"]
                for d in emulator.drives
            ]
            ui.print_table(["SERIAL", "PORT", "RUNS", "FLASH"], rows)
            print(f"drives file: {emulator.drives_file}", flush=True)
        if not stop.is_set():
            print(
                f"sealkeep emulate: {args.count} drive(s) running on a {args.link} link; "
                "SIGTERM or Ctrl-C stops them",
                file=sys.stderr,
                flush=True,
            )
        while not stop.wait(0.5):
            failure = emulator.failure
            if failure is not None:
                raise EmulatorError(failure)
    except OSError as exc:
        raise UsageError(f"cannot run the emulator in {args.dir}: {exc}") from None
    finally:
        emulator.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
        logger.removeHandler(handler)
    return 0
