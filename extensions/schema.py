"""The extension manifest's model: what each field may hold, judged by pydantic.

Loaded only to judge a manifest not judged before (``manifest.read_manifest``,
which keeps the judgement in the installation's memo, see config.memo).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .manifest import NAME

ExtensionName = Annotated[str, Field(pattern=NAME)]
SecretName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]
Platform = Literal["cpu", "nvidia", "apple"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requirements(_Strict):
    memory_mb: int = Field(default=0, ge=0)  # what the host should have free for it
    gpu: Literal["none", "nvidia"] = "none"
    # Secrets it needs (e.g. HF_TOKEN): kept in the installation's 0600
    # secrets.env, never in the manifest or a printed compose file.
    secrets: list[SecretName] = Field(default_factory=list)


class StdioServer(_Strict):
    """Run by the proxy inside its own container (the command must be in its image)."""

    transport: Literal["stdio"]
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[SecretName, str] = Field(default_factory=dict)


class ExtensionVolume(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    mount: Annotated[str, Field(pattern=r"^/")]
    cache: list[str] = Field(default_factory=list)  # re-creatable sub-paths


class ContainerServer(_Strict):
    """Its own container on the stack's network, described by compose.yml."""

    transport: Literal["streamable-http", "sse"]
    image: str = Field(min_length=1)  # default; images.<name> overrides it
    # Built from the folder's Dockerfile when the image is not there (BASE:
    # the proxy's image, which has Python and the mcp SDK).
    build: bool = False
    port: int = Field(ge=1, le=65535)  # inside the container
    host_port: int = Field(ge=1, le=65535)  # default published port (loopback), for probes
    path: str = Field(default="/mcp", pattern=r"^/")
    health: str = Field(default="/health", pattern=r"^/")  # answers 200 when it serves
    volumes: list[ExtensionVolume] = Field(default_factory=list)


class ExtensionManifest(_Strict):
    name: ExtensionName
    description: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1)
    kind: Literal["stdio", "container"]
    platforms: list[Platform] = Field(default_factory=lambda: ["cpu", "nvidia", "apple"])
    requires: Requirements = Field(default_factory=Requirements)
    # Other extensions, or core services, it needs running.
    depends_on: list[ExtensionName] = Field(default_factory=list)
    server: Annotated[StdioServer | ContainerServer, Field(discriminator="transport")]

    @model_validator(mode="after")
    def _kind_matches_server(self) -> ExtensionManifest:
        stdio = isinstance(self.server, StdioServer)
        if stdio != (self.kind == "stdio"):
            raise ValueError(f"kind {self.kind} does not match a {self.server.transport} server")
        if self.name in self.depends_on:
            raise ValueError("an extension cannot depend on itself")
        return self
