"""Fuzzing the loaders and parsers every user input goes through: whatever comes in,
the answer is a value or one expected error (exit 2), never another exception.

Bounded: a fixed number of examples each, no deadline, so the run stays short.
"""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollama_stack.common.errors import ConfigError
from ollama_stack.stack import config
from ollama_stack.stack.hosts.target import check_host_spec
from ollama_stack.tasks._base import refuse_bad_flags, seconds

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KEYS = st.sampled_from(
    ["project", "images", "ports", "bind", "platform", "services", "limits", "webui",
     "mcp_servers", "ollama", "webui", "mcp_proxy", "type", "url", "cpus", "command",
     "args", "env", "start_timeout", "container_url", "openai_api", "x"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=40)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_settings_layer_is_valid_or_one_config_error(layer):
    try:
        config.validate([("config.yaml", layer)])
    except ConfigError as exc:
        assert exc.code == 2 and "\n" not in exc.message.strip()


@FUZZ
@given(st.text(alphabet=string.printable + "äß€\t", max_size=300))
def test_any_config_file_text_reads_or_is_one_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        data = config.read_yaml(path)
    except ConfigError as exc:
        assert exc.code == 2 and str(path) in exc.message
    else:
        assert isinstance(data, dict)


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_yaml_document_loads_and_validates_or_is_refused(tmp_path, layer):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(layer))
    try:
        config.validate([(str(path), config.read_yaml(path))])
    except ConfigError as exc:
        assert exc.code == 2


@FUZZ
@given(st.text(max_size=30))
def test_any_timeout_flag_is_seconds_or_refused_before_the_task(value):
    result = type(seconds("--timeout", 1.0))(value)
    try:
        refuse_bad_flags({"timeout": result})
    except ConfigError as exc:
        assert exc.code == 2 and exc.message.startswith("--timeout ")
    else:
        assert 0 < result < float("inf")


@FUZZ
@given(st.text(max_size=40))
def test_any_remote_is_accepted_as_given_or_refused(value):
    try:
        assert check_host_spec(value) == value
    except ConfigError as exc:
        assert exc.code == 2
    else:
        assert not value.startswith("-") and not any(c in value for c in " ;$`|&<>'\"\n\\")


@FUZZ
@given(st.text(max_size=60))
def test_any_env_value_has_a_literal_line_or_is_refused(value):
    try:
        line = config.env_file_line("K", value)
    except ConfigError as exc:
        assert exc.code == 2
    else:
        assert line.startswith("K=") and line.endswith("\n") and line.count("\n") == 1


@pytest.mark.parametrize("depth", [50, 500])
def test_nested_documents_are_not_a_crash(tmp_path, depth):
    path = tmp_path / "config.yaml"
    path.write_text("ports:" + " {a:" * depth + " 1" + "}" * depth + "\n")
    with pytest.raises(ConfigError):
        config.validate([(str(path), config.read_yaml(path))])
