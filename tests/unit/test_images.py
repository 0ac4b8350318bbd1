"""stack/images.py: which images a push sends, and the docker argv it uses."""

from __future__ import annotations

import contextlib
import io

from ollama_stack.compose.client import ComposeProject, ImageInfo
from ollama_stack.stack import images


def test_a_push_skips_only_an_image_the_box_has_with_the_same_id():
    ours = ImageInfo("sha256:aaa", (), ("x:1",))
    assert images._same(ours, ImageInfo("sha256:aaa", (), ()))
    assert not images._same(ours, ImageInfo("sha256:bbb", (), ()))  # same tag, other image
    assert not images._same(ours, None)  # the box lacks it


def test_save_and_load_are_plain_docker_streams(monkeypatch):
    project = ComposeProject(project="p", files=[])
    seen: list[tuple[list[str], bool]] = []

    @contextlib.contextmanager
    def piped(self, argv, *, writing):
        seen.append((argv, writing))
        yield io.BytesIO()

    monkeypatch.setattr(ComposeProject, "_docker_argv", lambda self: ["docker"])
    monkeypatch.setattr(ComposeProject, "_piped", piped)
    with project.save_images(["a:1", "-rf:2"]):
        pass
    with project.load_images():
        pass
    assert seen == [
        (["docker", "save", "--", "a:1", "-rf:2"], False),  # a value is never an option
        (["docker", "load", "--quiet"], True),
    ]
