"""What a pipx user gets: the wheel, its console script, and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the console script of a fresh venv that has only that wheel of ours)."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(work.glob("ollama_stack-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Its dependencies come from the test venv (no second download of them).
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, venv / "bin" / "ollama-stack"


def run(script: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "OLLAMA_STACK_HOME": str(home / "s")}
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, cwd=home, timeout=60
    )


def test_the_wheel_carries_compose_files_and_image_recipes(installed_wheel):
    wheel, _ = installed_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "ollama_stack/compose/files/base.yml",
        "ollama_stack/compose/standins/mcpo/requirements.txt",
        "ollama_stack/compose/standins/mcpo/Dockerfile",
        "ollama_stack/compose/standins/ollama/server.py",
        "ollama_stack/compose/standins/webui/curl",
        "ollama_stack/tasks/program.py",
        "ollama_stack/extensions/time/extension.yaml",
        "ollama_stack/extensions/notes/extension.yaml",
        "ollama_stack/extensions/notes/compose.yml",
        "ollama_stack/extensions/notes/Dockerfile",
        "ollama_stack/extensions/notes/server.py",
        "ollama_stack/extensions/dia_tts/compose.yml",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "ollama_stack/tests"))]


def test_the_installed_console_script_runs_the_tasks(installed_wheel, tmp_path):
    _, script = installed_wheel
    listed = run(script, "--list", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("stack.start", "health.doctor", "update.apply", "dev.standins", "ext.enable"):
        assert name in listed.stdout
    # the installed package, not the checkout, answers
    installed = run(script, "stack.install", home=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "s" / "secrets.env").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -F"), ("zsh", "compctl -K"), ("fish", "complete --command")],
)
def test_shell_completion_scripts(installed_wheel, tmp_path, shell, marker):
    _, script = installed_wheel
    result = run(script, "--print-completion-script", shell, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout and "ollama-stack" in result.stdout
    # and what the script asks the program for (`--complete`) lists our tasks
    completed = run(script, "--complete", "--", "ollama-stack", "stack.", home=tmp_path)
    assert "stack.start" in completed.stdout.split()
