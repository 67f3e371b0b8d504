"""sealkeep drive firmware: boot, then serve the host over stdio.

Only protocol frames may reach stdout; every failure is logged to stderr.

A drive with an installed image has a boot record, ``slot/record`` in the flash root
(``ACTIVE PREVIOUS STATE FLOOR``, see ``fw/update.py``), and runs its active slot with
nothing else on the import path. ``board.init()`` then acts on it before anything else
takes the heap: a new image's first boot goes on, on trial; at a later boot on trial the
image is confirmed if its owner said so, else the previous slot becomes active again; an
image waiting is installed (the last three restart the drive). A new image that fails to
start at all is sent back too: its first boot is then over.

Without a boot record (the source tree on the unix port) the firmware runs from
``build/`` beside this file, which ``precompile.sh`` first brings up to date with
``mpy-cross``; if it cannot, the sources are imported (a bigger heap is then needed).

This file is compiled at every boot and each name and short string in it stays in the
heap for good, so it reuses a few names (``here``, ``tool``) and keeps literals long.
"""

import os
import sys

here = ""
if sys.platform in ("linux", "darwin"):
    here = (os.getenv("SEALKEEP_FLASH") or "flash").rstrip("/")
try:
    with open(here + "/slot/record") as f:
        tool = f.read(1)  # the active slot, a or b
    if here.startswith("/"):  # module paths under "." are shorter strings to keep
        os.chdir(here)
        here = "."
    sys.path[:] = [here + "/slot/" + tool]
except OSError:
    tool = None
if not tool and sys.platform in ("linux", "darwin"):
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    tool = sys.executable  # type: ignore[attr-defined]
    if os.system('sh "' + here + '/precompile.sh" "' + tool + '" 1>&2') == 0:
        # Every module keeps its path: under "./build" it is short, however deep the
        # checkout (the flash root must then not be relative to where it started).
        if here.startswith("/") and (os.getenv("SEALKEEP_FLASH") or "").startswith("/"):
            os.chdir(here)
            here = "."
        sys.path.insert(0, here + "/build")
    else:
        sys.stderr.write("sealkeep: precompiling failed: running from source\n")
    tool = None

try:
    import gc

    gc.collect()  # what choosing the path left behind goes before anything loads
    gc.threshold(1024)  # collect often while loading: loader garbage then leaves no holes
    import board

    board.init()  # on a drive with an image: boot record, and a pending install
    from fw import link, wire

    link.ROUTES[0x20] = (wire.call, 0)  # FIRMWARE; fw.update checks who may ask
    link.main()
except SystemExit:
    raise
except BaseException as exc:
    sys.stderr.write("sealkeep: fatal: ")
    sys.print_exception(exc, sys.stderr)  # type: ignore[arg-type]
    try:  # a new image that cannot start: the next boot goes back (board.init)
        os.remove(here + "/slot/trying")
    except OSError:
        pass
    sys.exit(1)
