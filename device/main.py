"""sealkeep drive firmware: boot, then serve the host over stdio.

Only protocol frames may reach stdout; every failure is logged to stderr.

The firmware runs from precompiled bytecode (``.mpy``), as on a board: a 64 KiB heap
cannot compile it from source. On the unix port, ``precompile.sh`` first brings ``build/``
up to date with ``mpy-cross``; if it cannot, the sources are imported (a bigger heap is
then needed). This file stays small: every name in a source file costs heap.
"""

import os
import sys

if sys.platform in ("linux", "darwin"):
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    tool = sys.executable  # type: ignore[attr-defined]
    if os.system('sh "' + here + '/precompile.sh" "' + tool + '" 1>&2') == 0:
        sys.path.insert(0, here + "/build")
    else:
        sys.stderr.write("sealkeep: precompiling failed: running from source\n")

try:
    import gc

    gc.threshold(1024)  # collect often while loading: loader garbage then leaves no holes
    import board

    board.init()
    from fw import link

    link.main()
except SystemExit:
    raise
except BaseException as exc:
    sys.stderr.write("sealkeep: fatal: ")
    sys.print_exception(exc, sys.stderr)  # type: ignore[arg-type]
    sys.exit(1)
