"""Validated settings as every namespace reads them, without pydantic.

pydantic judges a document once (``settings``, loaded only for that: it costs
about 100 ms of a 350 ms status); what it accepted is kept as a ``Frozen``
document, read-only, with its keys as items and as attributes, the way
invoke's DataProxy shows its config: ``settings.ports["webui"]``,
``settings.webui.offline``. A document kept from an earlier validation
(``memo``) reads back as an equal document, its keys in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from ..services import CATALOG

ServiceType = Literal["docker", "native-api", "remote-api"]
Platform = Literal["auto", "cpu", "nvidia", "apple"]
SECRET_KEYS = ("WEBUI_SECRET_KEY", "MCPO_API_KEY")
LOCAL_HOST = "local"  # in a host list: this machine


class Frozen(Mapping[str, Any]):
    """A validated document, read-only. Mappings in it are Frozen too; lists
    are copied (as pydantic's models gave them)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", {key: _frozen(value) for key, value in data.items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_data":  # copy and pickle probe these
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (replace() makes a copy)")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle: made again from its data
        return type(self), (self._data,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def replace(self, **changes: Any) -> Self:
        """A copy of the same kind with these keys set (pydantic's ``model_copy(update=...)``)."""
        return type(self)({**self._data, **changes})

    def to_json(self) -> dict[str, Any]:
        """Plain dicts and lists, as the validated document was."""
        return {key: _plain(value) for key, value in self._data.items()}


def _frozen(value: Any) -> Any:
    if isinstance(value, Frozen):
        return value
    if isinstance(value, Mapping):
        return Frozen(value)
    if isinstance(value, list):
        return [_frozen(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Frozen):
        return value.to_json()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class Settings(Frozen):
    """An installation's settings, validated (see ``config.settings``)."""

    @classmethod
    def validated(cls, **fields: Any) -> Settings:
        """These values over the defaults, judged as config.yaml's would be."""
        from .settings import validate

        return validate([("given", fields)])

    def exposure(self, published: list[str]) -> str | None:
        """What binding to every interface publishes, or None when it does not."""
        if self.bind not in ("0.0.0.0", "::"):
            return None
        exposed = (
            f"bind {self.bind} publishes {', '.join(published)} on every network this host is on"
        )
        models = CATALOG.model_server()
        if models and models.name in published and not models.auth_secret:
            exposed += f"; {models.title}'s API has no authentication"
        return exposed

    def service_type(self, name: str) -> ServiceType:
        return self.services[name].type


def settable_keys(services: Iterable[str]) -> dict[str, Any]:
    """Every key an ``OLLAMA_STACK_*`` variable may set, as a tree: what
    invoke's env loader crawls (``mcp_servers`` and ``hosts`` entries are not
    single values). The settings model has these fields; a unit test holds
    the two together."""
    names = list(services)
    per_service = dict.fromkeys(names)
    return {
        "project": None,
        "images": dict(per_service),
        "ports": dict(per_service),
        "bind": None,
        "platform": None,
        "services": {name: dict.fromkeys(("type", "url", "container_url")) for name in names},
        "limits": {name: {"cpus": None} for name in names},
        "start_timeout": None,
        "webui": dict.fromkeys(("openai_api", "offline")),
        "backup": {"store": None},
        "extensions": dict.fromkeys(("enabled", "paths")),
        "hosts": {},
    }


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def redact_url(url: str) -> str:
    """The URL as it may be shown: credentials in it become ***."""
    try:
        parts = urlsplit(url)
    except ValueError:  # malformed (an unclosed [v6 bracket): hide what looks like userinfo
        return re.sub(r"//[^/@]*@", "//***@", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
