"""``sealkeep completion``: the script is loaded into a real bash, and Tab is simulated the
way bash does it (COMP_WORDS / COMP_CWORD, then the function `complete -p` names)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sealkeep.cli import build_parser

BASH = shutil.which("bash")


def completion_script(shell: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "sealkeep.bash"
    path.write_text(completion_script("bash"))
    return path


def tab(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for Tab at the end of ``line`` (words split on spaces)."""
    assert BASH is not None
    words = line.split(" ")
    program = f"""
source {script}
function_name=$(complete -p sealkeep | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words) - 1}
"$function_name" sealkeep '{words[-1]}' '{words[-2]}'
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    return [w.strip() for w in done.stdout.splitlines() if w.strip()]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_completes_a_subcommand(bash_script: Path) -> None:
    assert tab(bash_script, "sealkeep res") == ["restore"]
    assert set(tab(bash_script, "sealkeep domain re")) == {"recover", "reshare"}


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_completes_a_flag(bash_script: Path) -> None:
    assert tab(bash_script, "sealkeep backup --al") == ["--allow-missing"]
    assert tab(bash_script, "sealkeep restore --dry") == ["--dry-run"]
    # a subcommand's own flags only: backup has no --replace
    assert tab(bash_script, "sealkeep backup --rep") == []


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_completes_paths_where_an_option_takes_one(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "pin.txt").write_text("")
    (tmp_path / "pins").mkdir()
    assert set(tab(bash_script, "sealkeep backup --pin-file pi", cwd=tmp_path)) >= {"pin.txt"}
    assert tab(bash_script, "sealkeep emulate --dir pi", cwd=tmp_path) in (["pins"], ["pins/"])
    assert tab(bash_script, "sealkeep backup --label pi", cwd=tmp_path) == []


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_every_subcommand_of_the_parser_completes(bash_script: Path) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(tab(bash_script, "sealkeep ")) >= set(commands.choices)


def test_zsh_script_is_made_from_the_same_parser() -> None:
    script = completion_script("zsh")
    assert script.startswith("#compdef sealkeep")
    assert "--allow-missing" in script and "restore" in script
    zsh = shutil.which("zsh")
    if zsh is not None:
        checked = subprocess.run([zsh, "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", "completion", "fish"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr
