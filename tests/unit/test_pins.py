"""Slot PINs and custodian passphrases: files, environment and prompts, never argv."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sealkeep.kdf import passphrase_weakness
from sealkeep.pins import (
    ENV_PIN,
    InputError,
    Passphrases,
    parse_passphrases,
    read_passphrase_file,
    read_pin_file,
    slot_pin,
)

STRONG = "orbit lantern quietly 42 maple"
OTHER = "violet harbour seventeen drums"


def prompter(answers: list[str]) -> tuple[Callable[[str], str], list[str]]:
    """A fake no-echo prompt that answers in turn, and the prompts it was shown."""
    shown: list[str] = []
    feed: Iterator[str] = iter(answers)

    def ask(text: str) -> str:
        shown.append(text)
        return next(feed)

    return ask, shown


def test_pin_file_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("1234 5678\nignored\n")
    path.chmod(0o600)
    warnings: list[str] = []
    assert read_pin_file(str(path), warnings.append) == "1234 5678"
    assert warnings == []


def test_pin_file_readable_by_others_warns(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("1234\n")
    path.chmod(0o644)
    warnings: list[str] = []
    assert read_pin_file(str(path), warnings.append) == "1234"
    assert "chmod 600" in warnings[0]


def test_pin_file_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_pin_file(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_pin_file(str(empty))
    assert InputError("x").exit_code == 2


def test_pin_order_file_env_prompt(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("from-file\n")
    path.chmod(0o600)
    ask, shown = prompter(["typed"])
    env = {ENV_PIN: "from-env"}
    assert slot_pin("slot 1", str(path), prompt=ask, environ=env) == "from-file"
    assert slot_pin("slot 1", None, prompt=ask, environ=env) == "from-env"
    assert slot_pin("slot 1", None, prompt=ask, environ={}) == "typed"
    assert shown == ["PIN for slot 1: "]


def test_no_pin_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    with pytest.raises(InputError, match="--pin-file"):
        slot_pin("slot 1", None, environ={})


def test_passphrase_lines() -> None:
    text = f"# custodians\n\nSK-1 {STRONG}\n  SK-2\t{OTHER}  \nSK-3 with  inner  spaces\n"
    parsed = parse_passphrases(text)
    assert parsed == {"SK-1": STRONG, "SK-2": OTHER, "SK-3": "with  inner  spaces"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SK-1\n", "line 1"),
        (f"SK-1 {STRONG}\nSK-1 {OTHER}\n", "listed twice"),
        ("# nothing\n", "no `SERIAL PASSPHRASE`"),
    ],
)
def test_bad_passphrase_files(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_passphrases(text)


def test_passphrase_file(tmp_path: Path) -> None:
    path = tmp_path / "pp"
    path.write_text(f"SK-1 {STRONG}\nSK-2 short\n")
    path.chmod(0o600)
    source = Passphrases(str(path))
    assert source.from_file and not source.retry()
    assert source.existing("SK-1") == STRONG
    assert source.new("SK-1") == STRONG
    assert source.has("SK-1") and not source.has("SK-9")
    with pytest.raises(InputError, match="too short"):
        source.new("SK-2")
    with pytest.raises(InputError, match="no passphrase for drive SK-9"):
        source.existing("SK-9")
    assert read_passphrase_file(str(path))["SK-2"] == "short"


def test_new_passphrase_is_asked_twice_and_checked() -> None:
    warnings: list[str] = []
    ask, shown = prompter(["short", STRONG, OTHER, STRONG, STRONG])
    source = Passphrases(prompt=ask, warn=warnings.append)
    assert source.new("SK-7") == STRONG
    assert len(shown) == 5 and all("SK-7" in s for s in shown)
    assert "too short" in warnings[0]
    assert "differ" in warnings[1]


def test_new_passphrase_refuses_dictionary_passphrases_with_classes() -> None:
    warnings: list[str] = []
    ask, _ = prompter(["Summer2024!!", "P@ssword2024!!", "correcthorsebattery"])
    source = Passphrases(prompt=ask, warn=warnings.append)
    with pytest.raises(InputError, match="after 3 tries"):
        source.new("SK-7")
    assert len(warnings) == 3 and all("too guessable" in w for w in warnings)


def test_an_empty_answer_offers_a_generated_passphrase() -> None:
    shown_to_custodian: list[str] = []
    answers: list[str] = [""]

    def ask(text: str) -> str:
        if answers:
            return answers.pop()
        # The custodian types back what was shown.
        assert "Type the generated passphrase back" in text
        return shown_to_custodian[-1].split("\n")[2].strip()

    source = Passphrases(prompt=ask, warn=shown_to_custodian.append)
    phrase = source.new("SK-7")
    assert phrase in shown_to_custodian[-1]
    assert len(phrase.split(" ")) >= 7
    assert passphrase_weakness(phrase) is None


def test_a_generated_passphrase_typed_back_wrong_is_not_taken() -> None:
    ask, _ = prompter(["", "not what was shown", STRONG, STRONG])
    source = Passphrases(prompt=ask, warn=lambda _: None)
    assert source.new("SK-7") == STRONG


def test_new_passphrase_gives_up() -> None:
    ask, _ = prompter(["password123"] * 3)
    source = Passphrases(prompt=ask, warn=lambda _: None)
    with pytest.raises(InputError, match="after 3 tries"):
        source.new("SK-7")


def test_existing_passphrase_is_asked_once_per_drive() -> None:
    ask, shown = prompter(["anything at all", ""])
    source = Passphrases(prompt=ask)
    assert source.retry()
    assert source.existing("SK-1") == "anything at all"
    with pytest.raises(InputError, match="no passphrase entered"):
        source.existing("SK-2")
    assert shown[0] == "Passphrase of the custodian of drive SK-1: "


def test_no_passphrase_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    with pytest.raises(InputError, match="--passphrases FILE"):
        Passphrases().existing("SK-1")
