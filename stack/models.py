"""Models: what the stack's model server holds, asked through its own API.

The model server is the catalog's (Ollama). Its API is reached the way the
health probes reach it (an SSH channel for a remote box), so the same code
serves this machine and `--remote`. A remote-api server is someone else's:
its models are listed, never pulled or deleted.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ollama_stack.common.errors import ConfigError, ExitCode, StackError, interruption_code

from .events import Progress, emit
from .health import Endpoint, get_json, json_body, send_json, stream_json_lines
from .runtime import Runtime
from .services import CATALOG, ServiceSpec

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MAX_MANIFEST = 1 << 20  # a model's manifest is a few hundred bytes


@dataclass(frozen=True)
class Model:
    name: str
    size: int
    digest: str
    modified: str
    loaded: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Pulled:
    name: str
    layers: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _server(rt: Runtime) -> tuple[ServiceSpec, Endpoint]:
    spec = CATALOG.model_server()
    if spec is None:
        raise ConfigError("no service of this stack serves models", "see `inv stack.status`")
    return spec, rt.endpoint(spec.name)


def _managed(rt: Runtime, spec: ServiceSpec, what: str) -> None:
    kind = rt.kind(spec.name)
    if not kind.managed:
        raise ConfigError(
            f"{spec.title} is a {kind.name} service at {rt.url(spec.name)}: its models are "
            f"listed here, not {what}",
            f"{what.split()[0]} them on the machine that runs it",
        )


def _unreachable(rt: Runtime, spec: ServiceSpec) -> StackError:
    return StackError(
        f"{spec.title} at {rt.url(spec.name)} did not answer",
        "`inv health.check` says why; `inv stack.start` starts it",
    )


def list_models(rt: Runtime) -> list[Model]:
    """Every model the server holds, and whether it is loaded in memory now."""
    spec, endpoint = _server(rt)
    tags = get_json(endpoint, "/api/tags", rt.target.dial, timeout=10.0)
    if not isinstance(tags, dict):
        raise _unreachable(rt, spec)
    running = get_json(endpoint, "/api/ps", rt.target.dial, timeout=10.0)
    loaded = {m.get("name") for m in (running or {}).get("models") or [] if isinstance(m, dict)}
    return [
        Model(
            name=str(m.get("name", "")),
            size=int(m.get("size") or 0),
            digest=str(m.get("digest", "")),
            modified=str(m.get("modified_at", "")),
            loaded=m.get("name") in loaded,
        )
        for m in tags.get("models") or []
        if isinstance(m, dict)
    ]


def canonical(name: str) -> str:
    """A model name as Ollama stores it: registry/namespace/model:tag."""
    if not name or any(c.isspace() for c in name) or ".." in name or name.startswith(("/", "-")):
        raise _bad_name(name)
    base, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
    parts = base.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    if len(parts) != 3 or not all(parts) or not tag:
        raise _bad_name(name)
    return f"{'/'.join(parts)}:{tag}"


def _bad_name(name: str) -> ConfigError:
    return ConfigError(
        f"{name!r} is not a model name", "like llama3.2, me/tiny:q4 or host/ns/m:tag"
    )


def manifest_path(name: str) -> str:
    """Where Ollama keeps a model's manifest, under its models folder."""
    base, _, tag = canonical(name).rpartition(":")
    return posixpath.join("manifests", base, tag)


def show(rt: Runtime, name: str) -> dict[str, Any]:
    """What the server says of a model (family, parameters, quantization, template)."""
    spec, endpoint = _server(rt)
    canonical(name)
    status, answer = send_json(endpoint, "POST", "/api/show", {"model": name}, rt.target.dial)
    if status == 404:
        raise _no_model(spec, name)
    if status != 200 or not isinstance(answer, dict):
        raise _unreachable(rt, spec)
    manifest = _manifest(rt, spec, name)
    return {"name": name, **answer, **({"manifest": manifest} if manifest else {})}


def _manifest(rt: Runtime, spec: ServiceSpec, name: str) -> dict[str, Any] | None:
    """The model's manifest (its layers: media type, size, digest), read out of
    the container's volume with `docker cp`; None where the stack cannot read
    the server's disk (a native or remote server)."""
    volume = next((v for v in spec.volumes if v.blobs), None)
    if volume is None or not rt.kind(spec.name).in_compose:
        return None
    container = next((c.name for c in rt.compose.ps() if c.service == spec.name), None)
    if container is None:
        return None
    models = posixpath.join(volume.mount, posixpath.dirname(volume.blobs or ""))
    path = posixpath.join(models, manifest_path(name))
    try:
        with (
            rt.compose.copy_out(container, path, contents=False) as stream,
            tarfile.open(fileobj=stream, mode="r|") as archive,
        ):
            for member in archive:
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None and member.size <= MAX_MANIFEST:
                    document = json_body(handle.read())
                    return document if isinstance(document, dict) else None
    except (StackError, tarfile.TarError):
        return None
    return None


def _no_model(spec: ServiceSpec, name: str) -> ConfigError:
    return ConfigError(f"{spec.title} has no model {name}", "`inv models.list` shows them")


def remove(rt: Runtime, name: str, confirm: Callable[[str], bool]) -> None:
    spec, endpoint = _server(rt)
    _managed(rt, spec, "deleted")
    canonical(name)
    if not confirm(f"delete model {name} from {spec.title} on {rt.target.label}?"):
        raise StackError("cancelled; nothing was deleted", code=ExitCode.FAILED)
    status, answer = send_json(endpoint, "DELETE", "/api/delete", {"model": name}, rt.target.dial)
    if status == 404:
        raise _no_model(spec, name)
    if status != 200:
        why = answer.get("error") if isinstance(answer, dict) else f"HTTP {status}"
        raise StackError(f"{spec.title} did not delete {name}: {why}", "see `inv stack.logs`")


def pull(rt: Runtime, name: str, progress: Progress | None = None) -> Pulled:
    """Pull through the server (it downloads and verifies), reporting each
    layer's bytes. Interrupted, Ollama keeps the partial download: the next
    pull of the same name goes on from there."""
    spec, endpoint = _server(rt)
    _managed(rt, spec, "pulled")
    canonical(name)
    sizes: dict[str, int] = {}
    try:
        for line in stream_json_lines(endpoint, "/api/pull", {"model": name}, rt.target.dial):
            _pull_line(spec, name, line, sizes, progress)
    except KeyboardInterrupt as stop:
        raise StackError(
            f"the pull of {name} was interrupted; {spec.title} keeps what it downloaded",
            f"`inv models.pull {name}` goes on from there",
            code=interruption_code(stop),
        ) from None
    except (OSError, TimeoutError):
        raise _unreachable(rt, spec) from None
    return Pulled(name, len(sizes), sum(sizes.values()))


def _pull_line(
    spec: ServiceSpec, name: str, line: Any, sizes: dict[str, int], progress: Progress | None
) -> None:
    if not isinstance(line, dict):
        return
    if line.get("error"):
        raise StackError(
            f"{spec.title} could not pull {name}: {line['error']}",
            "check the name (and that the box reaches its registry)",
        )
    digest, total = line.get("digest"), line.get("total")
    if digest and isinstance(total, int):
        sizes[str(digest)] = total
        done = int(line.get("completed") or 0)
        emit(progress, "transfer", str(digest)[7:19] or str(digest), total=total, done=done)
    elif line.get("status"):
        emit(progress, "step", str(line["status"]))
