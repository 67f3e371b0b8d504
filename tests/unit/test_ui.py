"""Output helpers: sizes, tables, error lines, the progress line."""

from __future__ import annotations

import io

from sealkeep import ui


def test_human_size() -> None:
    assert ui.human_size(None) == "-"
    assert ui.human_size(0) == "0 B"
    assert ui.human_size(1023) == "1023 B"
    assert ui.human_size(1536) == "1.5 KiB"
    assert ui.human_size(4 << 20) == "4.0 MiB"
    assert ui.human_size(270553174016) == "252 GiB"
    assert ui.human_size(-2048) == "-2.0 KiB"


def test_render_table_aligns_and_lets_short_rows_end_in_free_text() -> None:
    text = ui.render_table(
        ["SERIAL", "PORT", "STATE"],
        [["SK-1", "/dev/pts/10", "blank"], ["SK-22", "/dev/x", "unreachable: a long reason"]],
    )
    assert text.splitlines() == [
        "SERIAL  PORT         STATE",
        "SK-1    /dev/pts/10  blank",
        "SK-22   /dev/x       unreachable: a long reason",
    ]
    spanning = ui.render_table(["A", "B", "C"], [["x", "free text wider than B and C"]])
    assert spanning.splitlines()[1] == "x  free text wider than B and C"


def test_error_is_one_line() -> None:
    out = io.StringIO()
    ui.error("first line\n  second   line", out)
    assert out.getvalue() == "error: first line second line\n"


def test_progress_sums_parts_and_draws_only_when_enabled() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = ui.Progress("put", stream=out, enabled=True, interval=0, clock=lambda: now[0])
    a, b = progress.part("a"), progress.part("b")
    a(512, 1024)
    now[0] = 1.0
    b(1024, 1024)
    assert progress.text() == "put: 1.5 KiB of 2.0 KiB (75%), 1.5 KiB/s, 0 s left"
    progress.close()
    assert out.getvalue().startswith("\rput: 512 B of 1.0 KiB (50%)")
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()  # not a terminal: nothing drawn
    with ui.Progress("get", stream=quiet) as p:
        p(10, 100)
    assert quiet.getvalue() == ""


def test_progress_says_how_long_is_left() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = ui.Progress("put", 4000, stream=out, enabled=True, interval=0, clock=lambda: now[0])
    now[0] = 10.0
    progress(1000)
    assert progress.text().endswith(", 30 s left")  # a quarter in 10 s: 30 s more
    now[0] = 40.0
    progress(4000)
    assert "left" not in progress.text()
    assert ui.human_duration(59.6) == "1 min"
    assert ui.human_duration(185) == "3 min 5 s"
    assert ui.human_duration(3720) == "1 h 2 min"


def test_a_progress_of_objects_counts_them() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = ui.Progress(
        "restoring", stream=out, enabled=True, interval=0, clock=lambda: now[0], noun="objects"
    )
    now[0] = 2.0
    progress(250, 1000)
    assert progress.text() == "restoring: 250 of 1,000 objects (25%), 125 objects/s, 6 s left"
    progress(1000, 1000)
    assert progress.text() == "restoring: 1,000 of 1,000 objects (100%), 500 objects/s"
    progress.close()
    assert out.getvalue().endswith("500 objects/s\n")
    failed_early = io.StringIO()  # nothing reported before the work failed: nothing drawn
    ui.Progress("restoring", stream=failed_early, enabled=True, noun="objects").close()
    assert failed_early.getvalue() == ""


def test_the_backup_line_ends_with_the_slowest_drive() -> None:
    from sealkeep.commands.backup import DriveProgress

    now = [0.0]
    line = DriveProgress("writing", stream=io.StringIO(), enabled=False, clock=lambda: now[0])
    now[0] = 6.0
    line.update("SK-1", 500, 1000)
    line.update("SK-2", 250, 1000)
    assert line.text() == "writing: SK-1 50%, SK-2 25%, 125 B/s, 18 s left"
