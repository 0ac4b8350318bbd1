"""stack/models.py: model names as Ollama stores them, and a pull's progress lines."""

from __future__ import annotations

import pytest

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.stack import models
from ollama_stack.stack.events import Event
from ollama_stack.stack.services import CATALOG


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("llama3.2", "registry.ollama.ai/library/llama3.2:latest"),
        ("llama3.2:1b", "registry.ollama.ai/library/llama3.2:1b"),
        ("me/tiny:q4", "registry.ollama.ai/me/tiny:q4"),
        ("hf.co/bartowski/gemma:Q8_0", "hf.co/bartowski/gemma:Q8_0"),
        ("localhost:5000/ns/m:t", "localhost:5000/ns/m:t"),
    ],
)
def test_names_are_completed_as_ollama_completes_them(name, stored):
    assert models.canonical(name) == stored


def test_the_manifest_of_a_name_is_where_ollama_keeps_it():
    assert models.manifest_path("tiny") == "manifests/registry.ollama.ai/library/tiny/latest"


@pytest.mark.parametrize(
    "bad", ["", "a b", "../etc/passwd", "/abs", "-rf", "a/b/c/d", "x:", "a//b"]
)
def test_what_is_no_model_name_is_refused_before_it_reaches_a_path(bad):
    with pytest.raises(ConfigError, match="not a model name"):
        models.canonical(bad)


def test_a_pulls_lines_become_steps_and_one_bar_per_layer():
    seen: list[Event] = []
    sizes: dict[str, int] = {}
    spec = CATALOG.model_server()
    assert spec is not None
    lines = [
        {"status": "pulling manifest"},
        {
            "status": "pulling 0a1b2c",
            "digest": "sha256:0a1b2c3d4e5f6a7b",
            "total": 100,
            "completed": 40,
        },
        {
            "status": "pulling 0a1b2c",
            "digest": "sha256:0a1b2c3d4e5f6a7b",
            "total": 100,
            "completed": 100,
        },
        {"status": "verifying sha256 digest"},
        {"status": "success"},
        None,  # a line that is not JSON is passed over
    ]
    for line in lines:
        models._pull_line(spec, "tiny", line, sizes, seen.append)
    assert [e.kind for e in seen] == ["step", "transfer", "transfer", "step", "step"]
    assert (seen[2].message, seen[2].total, seen[2].done) == ("0a1b2c3d4e5f", 100, 100)
    assert sizes == {"sha256:0a1b2c3d4e5f6a7b": 100}
    with pytest.raises(StackError, match="could not pull nosuch: pull model manifest"):
        models._pull_line(
            spec, "nosuch", {"error": "pull model manifest: file does not exist"}, sizes, None
        )


def test_the_display_draws_transfer_bars_and_ends_them_before_a_message(capsys):
    from ollama_stack.stack.display import Display

    out = Display()
    out.progress(Event("transfer", "0a1b2c3d4e5f", total=100, done=50))
    assert out._bars is not None
    out.success("pulled tiny")
    assert out._bars is None
    assert "pulled tiny" in capsys.readouterr().out
