"""The compose env file we write, read back by Compose's own parser."""

from __future__ import annotations

import json
import subprocess

from ollama_stack.stack import config


def test_env_file_is_read_back_by_compose_unchanged(engine, tmp_path):
    """The real parser: compose's own `config` reads each value back as written."""
    values = {
        "PLAIN": "abc",
        "JSON": '{"mcpServers":{"x":{"command":"a b","args":["--tz=UTC","#1"]}}}',
        "DOLLAR": "a$b${C}",
    }
    env_file = tmp_path / "e.env"
    env_file.write_text("".join(config.env_file_line(k, v) for k, v in values.items()))
    compose = tmp_path / "c.yml"
    compose.write_text(
        "services:\n  s:\n    image: x\n    environment:\n"
        + "".join(f"      {k}: ${{{k}}}\n" for k in values)
    )
    out = subprocess.run(
        ["docker", "compose", "-p", "envtest", "-f", str(compose), "--env-file", str(env_file),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    environment = json.loads(out.stdout)["services"]["s"]["environment"]
    # `config` prints a literal $ as $$, so that its output can be read again
    assert {k: v.replace("$$", "$") for k, v in environment.items()} == values
