"""The compose wrapper: the only code that talks to Docker.

A ``ComposeProject`` is one installation on one engine (local, or ``ssh://``
remote). Methods are thin: they build the python-on-whales call, stream its
output to a callback instead of the terminal, and turn every ``DockerException``
into a ``StackError`` through ``compose.errors.translate``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from ollama_stack.common.errors import DockerUnavailable, SSHError, StackError

from . import engine
from .errors import translate

if TYPE_CHECKING:
    from python_on_whales import DockerClient

PullPolicy = Literal["always", "missing", "never"]
LineSink = Callable[[str], None]
FILES_DIR = Path(__file__).parent / "files"
EXEC_TIMEOUT = 15.0  # seconds for a question asked inside a container
# The installation id our compose files give when run without our env file:
# containers and volumes made from them by hand.
UNMANAGED = "unmanaged"
# On a container of the project that carries no installation label at all:
# not made from our compose files (another compose project of the same name).
UNLABELLED = "unlabelled"
INSTALLATION_LABEL = "io.ollama-stack.installation"
# The adoption mark: a volume of the project, never mounted, whose labels name
# the installation that took the project over last (`stack.adopt`). A volume,
# because the volumes it guards keep the old home's id and a copy of that
# home would find them its own; it lives on the same engine as they do.
ADOPTION_VOLUME = "ollama-stack-adoption"  # the volume is <project>_<this>
ADOPTED_BY_LABEL = "io.ollama-stack.adopted-by"
ADOPTED_HOME_LABEL = "io.ollama-stack.adopted-home"
ADOPTED_VOLUMES_LABEL = "io.ollama-stack.adopted-volumes"
_MARK_LABELS = (ADOPTED_BY_LABEL, ADOPTED_HOME_LABEL, ADOPTED_VOLUMES_LABEL)
STANDINS_DIR = Path(__file__).parent / "standins"


@dataclass(frozen=True)
class Publisher:
    url: str = ""
    target_port: int = 0
    published_port: int = 0


@dataclass(frozen=True)
class ContainerState:
    """One row of ``docker compose ps --format json`` (a plain record: a pydantic
    model costs `stack.status` its build at import)."""

    name: str
    service: str
    state: str
    health: str = ""
    image: str = ""
    status: str = ""
    publishers: tuple[Publisher, ...] | None = None
    labels: str = ""  # "k=v,k=v" as compose prints them

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ContainerState:
        publishers = row.get("Publishers")
        return cls(
            name=str(row["Name"]),
            service=str(row["Service"]),
            state=str(row["State"]),
            health=str(row.get("Health") or ""),
            image=str(row.get("Image") or ""),
            status=str(row.get("Status") or ""),
            publishers=None
            if publishers is None
            else tuple(
                Publisher(
                    url=str(p.get("URL") or ""),
                    target_port=int(p.get("TargetPort") or 0),
                    published_port=int(p.get("PublishedPort") or 0),
                )
                for p in publishers
            ),
            labels=str(row.get("Labels") or ""),
        )

    @property
    def published_ports(self) -> set[int]:
        return {p.published_port for p in self.publishers or [] if p.published_port}

    @property
    def installation(self) -> str:
        """Our io.ollama-stack.installation label; "" on rows compose printed without labels."""
        match = _INSTALLATION_LABEL.search(self.labels)
        return match.group(1) if match else (UNLABELLED if self.labels else "")

    @property
    def config_hash(self) -> str:
        """Compose's own hash of the service definition this container was made from."""
        match = _CONFIG_HASH_LABEL.search(self.labels)
        return match.group(1) if match else ""

    @property
    def environment_file(self) -> str:
        """The env file compose was given when it made this container ("" without one)."""
        match = _ENV_FILE_LABEL.search(self.labels)
        return match.group(1) if match else ""


_CONFIG_HASH_LABEL = re.compile(r"(?:^|,)com\.docker\.compose\.config-hash=([^,]+)")
_ENV_FILE_LABEL = re.compile(r"(?:^|,)com\.docker\.compose\.project\.environment_file=([^,]+)")
_INSTALLATION_LABEL = re.compile(r"(?:^|,)io\.ollama-stack\.installation=([^,]+)")


@dataclass(frozen=True)
class AdoptionMark:
    """Who took the compose project over last (`stack.adopt`), as its mark says."""

    installation: str  # the adopter's installation id
    home: str  # the adopter's installation directory
    volumes: str  # the installation id the project's volumes carry


@dataclass(frozen=True)
class ProjectVolumes:
    """The project's volumes → the installation id each carries ("" without our
    label), and the adoption mark, from one listing."""

    owners: dict[str, str]
    mark: AdoptionMark | None = None


@dataclass(frozen=True)
class Ownership:
    """Installation ids other than ours on the project's containers and
    volumes, and the adoption mark, from the same two listings."""

    others: set[str]
    mark: AdoptionMark | None = None


def _label_fields(*labels: str) -> list[str]:
    return [f'{{{{.Label "{label}"}}}}' for label in labels]


def _mark_of(fields: Sequence[str]) -> AdoptionMark | None:
    """The mark in (adopted-by, home, volumes) label values; None where absent."""
    by, home, volumes = fields
    return AdoptionMark(by, home, volumes) if by else None


@dataclass(frozen=True)
class ContainerRun:
    """What `docker inspect` says of one container's process: is it staying up?"""

    service: str
    id: str  # a recreated container keeps its name, not its ID
    status: str  # created, running, restarting, exited, paused, dead
    exit_code: int
    restart_count: int
    started_at: str = ""  # RFC 3339, as the engine's clock has it


@dataclass(frozen=True)
class ImageInfo:
    id: str
    repo_digests: tuple[str, ...]
    repo_tags: tuple[str, ...]


@dataclass(frozen=True)
class EngineInfo:
    server_version: str
    runtimes: tuple[str, ...]
    docker_root_dir: str
    operating_system: str
    ncpu: int
    mem_total: int
    architecture: str = ""


def parse_ps_output(text: str) -> list[ContainerState]:
    """Compose prints one JSON object per line (v2.21+) or one JSON array (older)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    return [ContainerState.from_row(row) for row in rows]


@dataclass(frozen=True)
class ComposeProject:
    project: str
    files: Sequence[Path]
    # Env files that do not exist (yet: `stack.start` writes the installation's
    # own before its first compose command) are left out; the files' defaults hold.
    env_files: Sequence[Path] = ()
    docker_host: str | None = None
    target_label: str = "local"
    images: Mapping[str, str] = field(default_factory=dict)
    installation: str | None = None  # our io.ollama-stack.installation label value
    # The value our data volumes carry, when not ``installation``: volumes taken
    # over from another home (`stack.adopt`) keep theirs, as a volume's labels
    # cannot change (and compose asks to recreate, emptying, one whose differ).
    volume_installation: str | None = None
    _clients: dict[tuple[Path, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def with_files(self, files: Sequence[Path]) -> ComposeProject:
        return replace(self, files=tuple(files))

    def with_env_files(self, env_files: Sequence[Path]) -> ComposeProject:
        return replace(self, env_files=tuple(env_files))

    # -- plumbing -------------------------------------------------------------

    @property
    def docker(self) -> DockerClient:
        return self._client_for(tuple(path for path in self.env_files if path.exists()))

    def _client_for(self, env_files: tuple[Path, ...]) -> DockerClient:
        if env_files not in self._clients:
            from python_on_whales import DockerClient

            self._clients[env_files] = DockerClient(
                host=self.docker_host,
                compose_files=list(self.files),
                compose_env_files=list(env_files),
                compose_project_name=self.project,
            )
        return self._clients[env_files]

    @contextmanager
    def _translated(self) -> Iterator[None]:
        from python_on_whales.client_config import ClientNotFoundError
        from python_on_whales.exceptions import DockerException

        try:
            yield
        except DockerException as exc:
            raise translate(
                exc.stderr or exc.stdout or "",
                [str(a) for a in exc.docker_command],
                target=self.target_label,
                images=self.images,
            ) from None
        except ClientNotFoundError:
            raise DockerUnavailable(
                "the docker CLI is not installed on this machine",
                "install Docker (Debian: apt-get install docker.io) and retry",
            ) from None

    def _run(self, args: list[str]) -> str:
        from python_on_whales.utils import run

        with self._translated():
            return run(args)

    def compose_argv(self, *args: str) -> list[str]:
        """The exact compose command line we run (and name in error messages)."""
        with self._translated():
            return [str(a) for a in self.docker.client_config.docker_compose_cmd] + list(args)

    def command_for_users(self, *args: str) -> list[str]:
        """The command line as `stack.config` prints it: with every env file,
        written yet or not (`stack.start` writes the installation's own)."""
        with self._translated():
            client = self._client_for(tuple(self.env_files))
            return [str(a) for a in client.client_config.docker_compose_cmd] + list(args)

    def _stream(self, argv: list[str], sink: LineSink | None, dedupe: bool = True) -> None:
        seen: set[str] = set()  # compose repeats each progress line when not on a TTY
        with self._translated():
            for _source, raw in stream_output(argv):
                line = raw.decode(errors="replace").strip()
                if line and sink and not (dedupe and line in seen):
                    seen.add(line)
                    sink(line)

    # -- engine ---------------------------------------------------------------

    def engine_info(self) -> EngineInfo:
        with self._translated():
            info = self.docker.system.info()
        return EngineInfo(
            server_version=info.server_version or "",
            runtimes=tuple(sorted((info.runtimes or {}).keys())),
            docker_root_dir=str(info.docker_root_dir or ""),
            operating_system=info.operating_system or "",
            ncpu=int(info.n_cpu or 0),
            mem_total=int(info.mem_total or 0),
            architecture=info.architecture or "",
        )

    def compose_version(self) -> str:
        with self._translated():
            return self.docker.compose.version().strip()

    def containers_publishing(self, port: int) -> list[str]:
        """Names of running containers (any project) publishing ``port``."""
        out = self._run(
            [*self._docker_argv(), "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"]
        )
        return [n for n in out.split() if n]

    def _docker_argv(self) -> list[str]:
        with self._translated():
            return [str(a) for a in self.docker.client_config.docker_cmd]

    # -- compose --------------------------------------------------------------

    def ps(self) -> list[ContainerState]:
        """This installation's containers: another home's, under the same project
        name, are never shown as ours (nor made by hand without our label)."""
        return self.ps_with_others()[0]

    def ps_with_others(self) -> tuple[list[ContainerState], list[ContainerState]]:
        """This installation's containers, and the project's others (another
        home's, or not made by ollama-stack), from one listing."""
        rows = self._ps_all()
        return [r for r in rows if self._is_ours(r)], [r for r in rows if not self._is_ours(r)]

    def _is_ours(self, row: ContainerState) -> bool:
        return not self.installation or row.installation in ("", self.installation)

    def foreign_containers(self) -> list[ContainerState]:
        """The project's containers that carry another installation's id: another
        home's, or made from our files by hand (``unmanaged``)."""
        return [
            row
            for row in self._ps_all()
            if row.installation not in ("", UNLABELLED, self.installation or "")
        ]

    def _ps_all(self) -> list[ContainerState]:
        """Every container of the project, whoever made it. Asked of the Engine
        API (a millisecond); the CLI's `compose ps` only where that cannot
        answer, and then it also says why."""
        try:
            listed = engine.project_containers(engine.locate(self.docker_host), self.project)
            return [ContainerState.from_row(row) for row in listed]
        except engine.EngineUnreachable:
            return parse_ps_output(self._run(self.compose_argv("ps", "--all", "--format", "json")))

    def container_runs(self) -> dict[str, ContainerRun]:
        """service → exit code and restart count of its container (two engine calls).

        One-off containers (`compose run`) are not the service's. A container
        removed between the two calls makes this answer empty, not an error.
        """
        names = [c.name for c in self.ps()]
        if not names:
            return {}
        try:
            out = self._run([*self._docker_argv(), "inspect", "--format", _RUN_FORMAT, *names])
        except StackError:
            return {}
        return {run.service: run for run in map(_parse_run, out.splitlines()) if run}

    def config_hashes(self) -> dict[str, str]:
        """service → the hash compose would give its container now (`config --hash`)."""
        out = self._run(self.compose_argv("config", "--hash", "*"))
        return dict(line.split(maxsplit=1) for line in out.splitlines() if len(line.split()) == 2)

    def exec_in(
        self, service: str, argv: Sequence[str], timeout: float = EXEC_TIMEOUT
    ) -> tuple[int, str]:
        """Run a command in the service's running container: (exit code, output).

        A non-zero exit is an answer here, not an error: the caller asked a
        question from inside the container and reads the reply. Bounded in
        time as a whole (124 when it runs out), so a stalled engine or SSH link
        cannot hold up a wait. Asked through the Engine API, as `compose exec`
        would, where that can answer; the CLI is asked only when nothing was
        started there, never a second time after an answer was lost.
        """
        deadline = time.monotonic() + timeout
        try:
            where = engine.locate(self.docker_host)
            return engine.exec_in(where, self.project, service, list(argv), timeout)
        except engine.EngineUnreachable:
            # Nothing was started: the CLI asks, in the time that is left.
            left = round(deadline - time.monotonic(), 1)
            if left <= 0:
                return 124, f"no answer within {timeout:g} s"
            return bounded_run(self.compose_argv("exec", "-T", service, *argv), left)
        except engine.ExecLost as lost:
            raise self._exec_lost(service, argv, str(lost), ssh=bool(where.ssh_argv)) from None

    def _exec_lost(self, service: str, argv: Sequence[str], why: str, *, ssh: bool) -> StackError:
        import shlex

        on = "" if self.target_label == "local" else f" on {self.target_label}"
        command = " ".join(shlex.join(argv).split())  # on one line
        message = (
            f"the Docker engine{on} stopped answering after `{command}` was started "
            f"in {service}'s container ({why}): it may have run; not run again"
        )
        check = f"see whether it took effect (`inv stack.logs -s {service}`), then run it again"
        if ssh:
            return SSHError(message, f"check `ssh {self.target_label} docker info`; {check}")
        return DockerUnavailable(message, f"check `docker info`; {check}")

    def up(
        self,
        services: Sequence[str],
        *,
        pull: PullPolicy = "missing",
        force_recreate: bool = False,
        no_deps: bool = False,
        sink: LineSink | None = None,
    ) -> None:
        argv = self.compose_argv("up", "--detach", "--pull", pull, "--remove-orphans")
        if force_recreate:
            argv.append("--force-recreate")
        if no_deps:
            argv.append("--no-deps")
        self._stream([*argv, *services], sink)

    def create(self, services: Sequence[str], sink: LineSink | None = None) -> None:
        """Containers (and their volumes) made but not started."""
        argv = self.compose_argv("up", "--no-start", "--pull", "never", "--no-deps")
        self._stream([*argv, *services], sink)

    def remove_services(self, services: Sequence[str], sink: LineSink | None = None) -> None:
        """Stop and remove these services' containers; volumes are left alone."""
        self._stream([*self.compose_argv("rm", "--stop", "--force"), *services], sink)

    def stop(self, services: Sequence[str] = (), sink: LineSink | None = None) -> None:
        self._stream([*self.compose_argv("stop"), *services], sink)

    def pause(self, names: Sequence[str]) -> None:
        """Freeze containers (their processes stop; files stay as they were)."""
        if names:
            self._run([*self._docker_argv(), "pause", *names])

    def unpause(self, names: Sequence[str]) -> None:
        if names:
            self._run([*self._docker_argv(), "unpause", *names])

    def copy_out(
        self, container: str, path: str, *, contents: bool = True
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A tar stream of ``path``'s contents in a container (running, paused or
        stopped), read as it comes: nothing is staged on either side. Needs
        nothing in the image; works through an ssh:// engine too.

        ``contents=False``: the path itself (a single file is one member)."""
        source = f"{path.rstrip('/')}/." if contents else path
        argv = [*self._docker_argv(), "cp", f"{container}:{source}", "-"]
        return self._piped(argv, writing=False)

    @contextmanager
    def copy_out_of_image(self, image: str, path: str) -> Iterator[IO[bytes]]:
        """A tar stream of ``path`` (itself, not its contents) in an image, read
        through a container made for it and never started (so nothing in the
        image runs, and nothing is needed in it), removed afterwards."""
        with self._scratch(image) as name, self.copy_out(name, path, contents=False) as stream:
            yield stream

    def volume_reader(
        self, image: str, volume: str, mount: str
    ) -> contextlib.AbstractContextManager[str]:
        """A container made (never started) with an existing volume mounted
        read-only, to `copy_out` through when the volume's own container is
        gone (a disabled extension's data); removed afterwards."""
        return self._scratch(image, ["--volume", f"{volume}:{mount}:ro"])

    @contextmanager
    def _scratch(self, image: str, mounts: Sequence[str] = ()) -> Iterator[str]:
        """A container of ``image`` that is never started, labelled so that
        `stack.uninstall` finds one a killed run left; its name."""
        import secrets

        name = f"{self.project}-scratch-{secrets.token_hex(4)}"
        create = [
            *self._docker_argv(),
            *("create", "--pull", "never", "--name", name, "--network", "none"),
            *("--label", f"io.ollama-stack.scratch={self.project}"),
            *mounts,
            *("--entrypoint", "/ollama-stack-never-started", "--", image),
        ]
        try:
            self._run(create)
            yield name
        finally:
            self._remove_scratch(name)

    def _remove_scratch(self, name: str) -> None:
        """Removed on the way out, whatever happened; a failure here never hides
        the one that got us here (`stack.uninstall` clears what is left)."""
        with contextlib.suppress(StackError):
            self._run([*self._docker_argv(), "rm", "--force", name])

    def copy_in(self, container: str, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Write a tar stream into ``path`` of a (stopped) container, extracted as
        it arrives, with numeric owners kept (`docker cp --archive`)."""
        argv = [*self._docker_argv(), "cp", "--archive", "-", f"{container}:{path}"]
        return self._piped(argv, writing=True)

    @contextmanager
    def _piped(self, argv: list[str], *, writing: bool) -> Iterator[IO[bytes]]:
        """A docker command whose stdin (writing) or stdout we stream through.

        If it fails, its own reason is the error (a cut stream or a broken pipe
        on our side is only the echo of it), translated into one line.
        """
        import subprocess

        with subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if writing else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if writing else subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            end = process.stdin if writing else process.stdout
            assert end is not None and process.stderr is not None
            try:
                yield end
                while not writing and end.read(1 << 16):  # tar's padding: docker cp
                    pass  # must not see a closed pipe and fail
            except KeyboardInterrupt:
                process.kill()
                raise
            except Exception:
                if not _ended(process):
                    process.kill()
                    raise
                if process.returncode == 0:
                    raise
                error = process.stderr.read().decode(errors="replace")
                raise translate(error, argv, target=self.target_label, images=self.images) from None
            finally:
                with contextlib.suppress(BrokenPipeError):
                    end.close()
            error = process.stderr.read().decode(errors="replace")
            if process.wait() != 0:
                raise translate(error, argv, target=self.target_label, images=self.images)

    def stop_containers(self, names: Sequence[str]) -> None:
        """Stop containers by name (ones compose's files no longer describe)."""
        if names:
            self._run([*self._docker_argv(), "stop", *names])

    def config_yaml(self) -> str:
        return self._run(self.compose_argv("config"))

    def logs(
        self,
        services: Sequence[str] = (),
        *,
        follow: bool = False,
        tail: str | None = None,
        since: str | None = None,
        timestamps: bool = False,
    ) -> Iterator[str]:
        """Log lines as plain text; the caller must never treat them as markup."""
        from python_on_whales.utils import stream_stdout_and_stderr

        argv = self.compose_argv("logs", "--no-color")
        if follow:
            argv.append("--follow")
        if tail is not None:
            argv += ["--tail", str(tail)]
        if since:
            argv += ["--since", since]
        if timestamps:
            argv.append("--timestamps")
        with self._translated():
            for _source, raw in stream_stdout_and_stderr([*argv, *services]):
                yield raw.decode(errors="replace").rstrip("\n")

    def last_log_lines(self, service: str, count: int = 5) -> list[str]:
        try:
            return [ln for ln in self.logs([service], tail=str(count)) if ln.strip()][-count:]
        except StackError:
            return []

    # -- images ---------------------------------------------------------------

    def build_image(
        self, context: Path, tag: str, build_args: Mapping[str, str], sink: LineSink | None = None
    ) -> None:
        """Build with the classic builder: buildx is often absent on distro engines."""
        argv = [*self._docker_argv(), "build", "--quiet", "--tag", tag]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        from python_on_whales.utils import stream_stdout_and_stderr

        with self._translated():
            for _source, raw in stream_stdout_and_stderr(
                [*argv, str(context)], env={"DOCKER_BUILDKIT": "0"}
            ):
                if sink:
                    sink(raw.decode(errors="replace").rstrip())

    def import_image(self, tarball: Path, tag: str, changes: Sequence[str] = ()) -> None:
        """`docker import` a root file system tarball as an image."""
        argv = [*self._docker_argv(), "import"]
        for change in changes:
            argv += ["--change", change]
        self._run([*argv, str(tarball), tag])

    def image_exists(self, reference: str) -> bool:
        try:
            return engine.image(engine.locate(self.docker_host), reference) is not None
        except engine.EngineUnreachable:
            with self._translated():
                return self.docker.image.exists(reference)

    def image_info(self, reference: str) -> ImageInfo | None:
        """Local image facts, or None when the engine does not have it."""
        try:
            found = engine.image(engine.locate(self.docker_host), reference)
        except engine.EngineUnreachable:
            return self._image_info_by_cli(reference)
        if found is None:
            return None
        digests, tags = found.get("RepoDigests") or (), found.get("RepoTags") or ()
        return ImageInfo(str(found["Id"]), tuple(digests), tuple(tags))

    def _image_info_by_cli(self, reference: str) -> ImageInfo | None:
        with self._translated():
            if not self.docker.image.exists(reference):
                return None
            image = self.docker.image.inspect(reference)
        return ImageInfo(image.id, tuple(image.repo_digests or ()), tuple(image.repo_tags or ()))

    def save_images(
        self, references: Sequence[str]
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """`docker save` of these images as a tar stream, read as it comes."""
        return self._piped([*self._docker_argv(), "save", "--", *references], writing=False)

    def load_images(self) -> contextlib.AbstractContextManager[IO[bytes]]:
        """`docker load`: write a `docker save` stream into it (the engine checks
        every layer against its digest)."""
        return self._piped([*self._docker_argv(), "load", "--quiet"], writing=True)

    def container_image_ids(self) -> dict[str, str]:
        """service → image ID its container runs now (stopped containers too)."""
        try:
            listed = engine.project_summaries(engine.locate(self.docker_host), self.project)
        except engine.EngineUnreachable:
            return self._container_image_ids_by_cli()
        rows = [(ContainerState.from_row(engine.compose_row(c)), c["ImageID"]) for c in listed]
        return {row.service: image_id for row, image_id in rows if self._is_ours(row)}

    def _container_image_ids_by_cli(self) -> dict[str, str]:
        names = {c.name: c.service for c in self.ps()}
        if not names:
            return {}
        with self._translated():
            containers = self.docker.container.inspect(list(names))
        return {names[c.name.lstrip("/")]: c.image for c in containers}

    def pull_image(self, reference: str, sink: LineSink | None = None) -> None:
        """`docker pull`, its per-layer lines streamed to ``sink``."""
        argv = [*self._docker_argv(), "pull", "--", reference]  # a value, never an option
        self._stream(argv, sink, dedupe=False)

    def tag(self, source: str, target: str) -> None:
        with self._translated():
            self.docker.image.tag(source, target)

    def remove_image(self, reference: str) -> bool:
        """Untag/remove without force; False when any container still uses it.

        `docker rmi` happily drops one tag of a multi-tagged image even while
        a container was created from that very tag, which would strand another
        installation using the same reference: so look first.
        """
        from python_on_whales.exceptions import DockerException

        # `ps` shows the reference each container was created from; the
        # `ancestor` filter would match by image ID and keep every shared layer.
        used = self._run([*self._docker_argv(), "ps", "--all", "--format", "{{.Image}}"]).split()
        names = {reference, reference.removesuffix(":latest")}
        if names & set(used):
            return False
        try:
            self.docker.image.remove(reference)
        except DockerException as exc:
            if "conflict" in (exc.stderr or "").lower() or "in use" in (exc.stderr or ""):
                return False
            raise translate(exc.stderr or "", [str(a) for a in exc.docker_command]) from None
        return True

    def images_matching(self, reference: str) -> list[str]:
        """Local tags matching a `docker images` reference pattern (``repo:*``)."""
        out = self._run(
            [
                *self._docker_argv(),
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "--",
                reference,
            ]
        )
        return [line for line in out.split() if line and "<none>" not in line]

    # -- resources by label -----------------------------------------------------

    def labelled(
        self, kind: Literal["container", "volume", "network"], project: str | None = None
    ) -> list[str]:
        """Names of this project's containers, volumes or networks, found by label
        (``project``: another compose project of this installation's, a trial's)."""
        # Both labels (filters AND together): another compose project, or
        # another installation, that happens to share the name is not ours.
        ours = ["--filter", f"label=com.docker.compose.project={project or self.project}"]
        installation = self._ours(kind)
        if installation:
            ours += ["--filter", f"label=io.ollama-stack.installation={installation}"]
        listing = {
            "container": ["ps", "--all", *ours, "--format", "{{.Names}}"],
            "volume": ["volume", "ls", *ours, "--format", "{{.Name}}"],
            "network": ["network", "ls", *ours, "--format", "{{.Name}}"],
        }[kind]
        return sorted(self._run([*self._docker_argv(), *listing]).split())

    def scratch_containers(self) -> list[str]:
        """Never-started containers this project made to read an image or a
        volume (copy_out_of_image, volume_reader), left by a run that was killed."""
        label = f"label=io.ollama-stack.scratch={self.project}"
        listing = ["ps", "--all", "--filter", label, "--format", "{{.Names}}"]
        return sorted(self._run([*self._docker_argv(), *listing]).split())

    def _ours(self, kind: Literal["container", "volume", "network"]) -> str | None:
        """The installation id our resources of this kind carry."""
        if kind == "volume":
            return self.volume_installation or self.installation
        return self.installation

    def foreign_installations(self) -> set[str]:
        """Installation ids, other than ours, on containers or volumes of this project."""
        return self.ownership().others

    def ownership(self) -> Ownership:
        """Who else holds this project: other ids on its containers and volumes,
        and its adoption mark (read from the same volume listing: no extra call)."""
        project = f"label=com.docker.compose.project={self.project}"
        (label,) = _label_fields(INSTALLATION_LABEL)
        listing = ["ps", "--all", "--filter", project, "--format", label]
        containers = self._run([*self._docker_argv(), *listing])
        found = {line.strip() for line in containers.splitlines()} - {"", self._ours("container")}
        mark = None
        for installation, *marked in self._volume_rows(INSTALLATION_LABEL, *_MARK_LABELS):
            mark = mark or _mark_of(marked)
            if installation not in ("", self._ours("volume")):
                found.add(installation)
        return Ownership(found, mark)

    def project_volumes(self) -> dict[str, str]:
        """Every volume of this compose project → the installation id it carries
        ("" without our label)."""
        return self.volumes_and_mark().owners

    def volumes_and_mark(self) -> ProjectVolumes:
        """The project's volumes (the mark left out) and its adoption mark."""
        owners, mark = {}, None
        for name, installation, *marked in self._volume_rows(
            INSTALLATION_LABEL, *_MARK_LABELS, named=True
        ):
            found = _mark_of(marked)
            if found is None:
                owners[name] = installation
            mark = mark or found
        return ProjectVolumes(owners, mark)

    def adoption_mark(self) -> AdoptionMark | None:
        """Who adopted this project last (None: nobody, or the mark was removed)."""
        rows = self._volume_rows(*_MARK_LABELS, having=ADOPTED_BY_LABEL)
        return next((mark for mark in map(_mark_of, rows) if mark), None)

    def _volume_rows(self, *labels: str, named: bool = False, having: str = "") -> list[list[str]]:
        """One listing of this project's volumes (``having``: only those with
        that label), by name: each volume's name when ``named``, then its value
        of each label, "" where one is missing. Asked of the Engine API (a
        status of a stopped stack asks for the mark), else `docker volume ls`."""
        try:
            listed = engine.project_volumes(engine.locate(self.docker_host), self.project, having)
        except engine.EngineUnreachable:
            return self._volume_rows_by_cli(*labels, named=named, having=having)
        rows = []
        for volume in listed:
            values = volume.get("Labels") or {}
            names = [volume.get("Name") or ""] if named else []
            rows.append([str(v).strip() for v in (*names, *(values.get(k, "") for k in labels))])
        return [row for row in rows if any(row)]  # as the CLI's, which has no line for them

    def _volume_rows_by_cli(self, *labels: str, named: bool, having: str) -> list[list[str]]:
        project = f"label=com.docker.compose.project={self.project}"
        columns = [*(["{{.Name}}"] if named else []), *_label_fields(*labels)]
        argv = [*self._docker_argv(), "volume", "ls", "--filter", project]
        argv += ["--filter", f"label={having}"] if having else []
        out = self._run([*argv, "--format", "\t".join(columns)])
        padded = (line.split("\t") + [""] * len(columns) for line in out.splitlines())
        return [[v.strip() for v in row[: len(columns)]] for row in padded if any(row)]

    @property
    def adoption_volume(self) -> str:
        return f"{self.project}_{ADOPTION_VOLUME}"

    def mark_adoption(self, home: str) -> None:
        """Write the mark: this installation (at ``home``) adopted the project,
        whose volumes carry the id given to ours. A volume's labels cannot
        change, so the mark is made anew; it holds no data and is never mounted."""
        name = self.adoption_volume
        self._run([*self._docker_argv(), "volume", "rm", "--force", name])
        labels = {
            "com.docker.compose.project": self.project,
            ADOPTED_BY_LABEL: self.installation or "",
            ADOPTED_HOME_LABEL: home,
            ADOPTED_VOLUMES_LABEL: self._ours("volume") or "",
        }
        argv = [*self._docker_argv(), "volume", "create"]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        self._run([*argv, name])

    def volume_exists(self, name: str) -> bool:
        out = self._run(
            [*self._docker_argv(), "volume", "ls", "--quiet", "--filter", f"name={name}"]
        )
        return name in out.split()

    def remove(self, kind: Literal["container", "volume", "network"], names: Sequence[str]) -> None:
        if not names:
            return
        command = {
            "container": ["rm", "--force"],
            "volume": ["volume", "rm"],
            "network": ["network", "rm"],
        }
        self._run([*self._docker_argv(), *command[kind], *names])


_RUN_FORMAT = "\t".join(
    (
        '{{index .Config.Labels "com.docker.compose.service"}}',
        '{{index .Config.Labels "com.docker.compose.oneoff"}}',
        "{{.Id}}",
        "{{.State.Status}}",
        "{{.State.ExitCode}}",
        "{{.RestartCount}}",
        "{{.State.StartedAt}}",
    )
)


def _parse_run(line: str) -> ContainerRun | None:
    parts = line.split("\t")
    if len(parts) != 7 or not parts[0] or parts[1] == "True":
        return None
    service, _oneoff, container_id, status, exit_code, restarts, started = parts
    return ContainerRun(service, container_id, status, int(exit_code), int(restarts), started)


def stream_output(argv: list[str]) -> Iterator[tuple[str, bytes]]:
    """(stdout or stderr, line) of a docker command as it prints them, its stdin closed.

    python-on-whales' stream_stdout_and_stderr lets compose read our terminal,
    where it asks questions our display never shows ("Volume … exists but
    doesn't match configuration in compose file. Recreate (data will be
    lost)?": a volume whose labels differ) and waits, and where a "y" empties
    the volume. With no terminal it keeps the volume and says so. Unit tests
    replace this, as they replace python-on-whales' runners.
    """
    import queue
    import subprocess
    import threading

    from python_on_whales.utils import get_docker_exception_type, reader

    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    lines: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
    for pipe, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        threading.Thread(target=reader, args=[pipe, name, lines], daemon=True).start()
    errors = b""
    for _ in range(2):  # each reader ends with None
        for source, line in iter(lines.get, None):
            yield source, line
            if source == "stderr":
                errors += line
    if process.wait() != 0:
        raise get_docker_exception_type(errors)(
            command_launched=argv, return_code=process.returncode, stderr=errors
        )


def bounded_run(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run a docker command with a time limit: (exit code, stdout or the failure's output).

    python-on-whales' runner has no timeout; this one does, for questions
    whose answer must not hold up a wait. Unit tests replace it, as they
    replace python-on-whales' runners.
    """
    import subprocess

    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout:g} s"
    except OSError as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout if done.returncode == 0 else done.stderr + done.stdout)


def _ended(process: Any, grace: float = 2.0) -> bool:
    """Has the process ended (or does it within ``grace`` seconds)?"""
    import subprocess

    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return False
    return True


def compose_file(name: str) -> Path:
    return FILES_DIR / name
