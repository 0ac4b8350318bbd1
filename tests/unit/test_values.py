"""stack/config/values.py: validated documents, read-only, without pydantic."""

from __future__ import annotations

import copy

import pytest

from ollama_stack.stack.config import Settings
from ollama_stack.stack.config.values import Frozen


def test_keys_read_as_items_and_as_attributes_all_the_way_down():
    doc = Frozen({"ports": {"webui": 3000}, "webui": {"offline": True}, "enabled": ["time"]})
    assert doc.ports["webui"] == 3000 and doc["ports"].webui == 3000
    assert doc.webui.offline is True and doc.enabled == ["time"]
    assert getattr(doc, "headers", {}) == {}  # a key the document lacks
    assert dict(doc.ports) == {"webui": 3000} and doc.ports == {"webui": 3000}


def test_a_document_cannot_be_changed_only_copied():
    doc = Frozen({"bind": "127.0.0.1", "services": {"ollama": {"type": "docker"}}})
    with pytest.raises(AttributeError, match="read-only"):
        doc.bind = "0.0.0.0"  # type: ignore[misc]
    with pytest.raises(TypeError):
        doc["bind"] = "0.0.0.0"  # type: ignore[index]
    changed = doc.replace(bind="0.0.0.0")
    assert (doc.bind, changed.bind) == ("127.0.0.1", "0.0.0.0")
    assert changed.services is doc.services  # what is not replaced is shared, never copied


def test_to_json_gives_back_the_document_it_was_made_from():
    given = {"a": {"b": [{"c": 1}], "d": None}, "e": []}
    assert Frozen(given).to_json() == given
    assert copy.deepcopy(Frozen(given)) == Frozen(given)


def test_settings_keep_their_kind_through_a_copy():
    settings = Settings.validated(platform="cpu")
    copied = settings.replace(bind="0.0.0.0")
    assert isinstance(copied, Settings) and copied.platform == "cpu"
    assert "no authentication" in copied.exposure(["ollama"])
