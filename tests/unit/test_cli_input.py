"""What the command line does with what a person types: a PIN or passphrase given as an
option is refused with the way to give it, a usage error hides any value that may be a
secret, no option is abbreviated in any (sub)command, and Ctrl-D or Ctrl-C at a prompt ends
the command cleanly. Run as a user would: ``sealkeep`` in-process for usage errors, and
``python3 -m sealkeep`` on a pty for the prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from sealkeep.cli import main
from sealkeep.pins import InputError, Passphrases

SECRET = "123456"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and everything printed, for ``sealkeep ARGV``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def test_a_pin_option_is_refused_pointing_at_the_pin_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["slots", "--pin", SECRET], ["slots", f"--pin={SECRET}"]):
        code, text = run(capsys, *argv)
        assert code == 2, text
        assert SECRET not in text
        assert "--pin-file FILE" in text and "$SEALKEEP_PIN" in text, text


def test_a_passphrase_option_points_at_what_the_command_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, text = run(capsys, "firmware", "keygen", "--out", "k", "--passphrase", SECRET)
    assert code == 2 and SECRET not in text
    assert "--passphrase-file FILE or the prompt" in text, text
    code, text = run(capsys, "drives", "reset", "--drives", "p", "--passphrase", SECRET)
    assert code == 2 and SECRET not in text
    assert "--passphrases FILE or the prompt" in text, text


def test_the_refusal_is_a_json_error_under_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["slots", "--json", "--so-pin", SECRET])
    out, err = capsys.readouterr()
    assert code == 2 and SECRET not in out + err
    assert json.loads(out)["error"]["exit_code"] == 2


@pytest.mark.parametrize(
    ("argv", "abbreviation"),
    [
        (["keys", "--slot", "1", "--pin-f", "pinfile"], "--pin-f"),
        (["keys", "--slot", "1", "--pin-f=pinfile"], "--pin-f="),
        (["domain", "create", "--slot", "1", "--thresh", "2"], "--thresh"),
        (["drives", "reset", "--drives", "p", "--passphrase-f", "x"], "--passphrase-f"),
        (["firmware", "keygen", "--out", "k", "--no-pass"], "--no-pass"),
    ],
)
def test_no_option_is_abbreviated_in_any_command(
    capsys: pytest.CaptureFixture[str], argv: list[str], abbreviation: str
) -> None:
    code, text = run(capsys, *argv)
    assert code == 2 and f"unrecognized arguments: {abbreviation}" in text, text


@pytest.mark.parametrize(
    ("argv", "secret", "shown"),
    [
        (["slots", "--pinx", "s"], "s", "unrecognized arguments: --pinx (hidden)"),
        (["slots", "--pinx", "-s3cret"], "-s3cret", "unrecognized arguments: --pinx (hidden)"),
        (["slots", "--passwd=it's"], "it's", "unrecognized arguments: --passwd=(hidden)"),
        (["--secret-pin", SECRET, "slots"], SECRET, "invalid choice: '(hidden)'"),
    ],
)
def test_a_value_after_a_secret_looking_option_is_hidden_and_only_it(
    capsys: pytest.CaptureFixture[str], argv: list[str], secret: str, shown: str
) -> None:
    code, text = run(capsys, *argv)
    assert code == 2
    assert shown in text, text  # the message is intact around the hidden value
    if len(secret) > 1:
        assert secret not in text


def test_values_of_other_options_stay_in_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "slots", "--labelx", "visible-value", "--pin-file", "pin")
    assert code == 2 and "unrecognized arguments: --labelx visible-value" in text, text


def test_ctrl_d_at_a_passphrase_prompt_names_the_drive() -> None:
    def ended(text: str) -> str:
        raise EOFError

    with pytest.raises(InputError, match=r"no passphrase for drive D1 given: input ended"):
        Passphrases(prompt=ended).existing("D1")
    with pytest.raises(InputError, match=r"no passphrase for drive D2 given: input ended"):
        Passphrases(prompt=ended).new("D2")


@pytest.fixture(scope="module")
def token_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An environment with one SoftHSM token, ``prompted``, and no PIN anywhere."""
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    (home / "softhsm2.conf").write_text(f"directories.tokendir = {home / 'tokens'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALKEEP_")}
    env["SOFTHSM2_CONF"] = str(home / "softhsm2.conf")
    init = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "prompted", "--so-pin", "1234",
         "--pin", "1234"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    yield env


def at_the_pin_prompt(env: dict[str, str], cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sealkeep", "keys", "--slot", "prompted"],
        env=env,
        cwd=str(cwd),
        encoding="utf-8",
        timeout=30,
    )
    child.expect("PIN for ")
    return child


def finished(child: pexpect.spawn) -> tuple[int, str]:
    try:
        child.expect(pexpect.EOF)
        text = str(child.before)
    finally:
        child.close(force=True)
    assert child.exitstatus is not None, child.signalstatus
    return int(child.exitstatus), text


def test_ctrl_d_at_the_pin_prompt_says_no_pin_was_given(
    token_env: dict[str, str], tmp_path: Path
) -> None:
    child = at_the_pin_prompt(token_env, tmp_path)
    child.sendeof()
    code, text = finished(child)
    assert code == 2, text
    assert "error: no PIN for slot" in text and "given: input ended (Ctrl-D)" in text, text
    assert "EOFError" not in text and "Traceback" not in text


def test_ctrl_c_at_the_pin_prompt_exits_130(token_env: dict[str, str], tmp_path: Path) -> None:
    child = at_the_pin_prompt(token_env, tmp_path)
    child.sendintr()
    code, text = finished(child)
    assert code == 130, text
    assert "interrupted" in text and "Traceback" not in text


def test_a_drives_file_without_at_is_not_taken_for_a_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "drives.json").write_text('{"drives": []}')
    monkeypatch.chdir(tmp_path)
    code, text = run(capsys, "drives", "--drives", "drives.json")
    assert code == 2 and "did you mean @drives.json?" in text, text
