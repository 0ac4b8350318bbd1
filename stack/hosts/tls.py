"""TLS over a byte stream that is not a socket: an SSH ``direct-tcpip`` channel.

``ssl.SSLContext.wrap_socket`` needs a real socket, and a paramiko Channel is
not one. An ``SSLObject`` over two memory BIOs does the TLS in memory; this
class carries its bytes over the channel. No thread is involved (nothing to
leak or join), and the channel's own timeout bounds every wait, as a socket's
does for ``wrap_socket``.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any, Protocol, TypeVar

CHUNK = 64 * 1024
T = TypeVar("T")


class Channel(Protocol):
    """What we use of a paramiko Channel (and of a socket: tests pass one)."""

    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> Any: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


class TLSChannel:
    """The socket calls http.client makes (sendall, makefile, close), in TLS over ``channel``.

    The handshake happens here, so a certificate that does not verify raises
    ``ssl.SSLCertVerificationError`` before any request is sent.
    """

    def __init__(self, channel: Channel, context: ssl.SSLContext, server_hostname: str) -> None:
        self._channel = channel
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ended = False
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._pump(self._tls.do_handshake)

    def _pump(self, operation: Callable[[], T]) -> T:
        """Run one TLS operation, feeding it from the channel until it has what it needs."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                if self._incoming.eof:  # never spin on a stream that has ended
                    raise ssl.SSLEOFError("the channel closed in the middle of TLS") from None
                self._flush()  # the peer may need our bytes before it answers
                data = self._channel.recv(CHUNK)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._channel.sendall(data)

    def recv(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes; b"" at the end of the stream.

        A peer that closes without TLS's close_notify (most HTTP servers after
        "Connection: close") ends the stream too, as ``wrap_socket``'s
        suppress_ragged_eofs makes it for a socket.
        """
        if self._ended or not size:
            return b""
        try:
            data = self._pump(partial(self._tls.read, size))
        except ssl.SSLEOFError:
            self._ended = True
            return b""
        if not data:  # the peer's close_notify
            self._ended = True
            self._answer_close_notify()
        return data

    def _answer_close_notify(self) -> None:
        """A peer that closed cleanly waits for our close_notify; send it."""
        with suppress(OSError):  # it is gone already: nothing is lost, the stream has ended
            self._pump(self._tls.unwrap)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._pump(partial(self._tls.write, view))
            view = view[written:]

    def makefile(self, mode: str = "rb", buffering: int | None = None) -> io.BufferedReader:
        if mode not in ("r", "rb"):
            raise ValueError(f"TLSChannel.makefile supports reading only, not {mode!r}")
        return io.BufferedReader(_Reader(self), buffering or io.DEFAULT_BUFFER_SIZE)

    def settimeout(self, timeout: float | None) -> None:
        self._channel.settimeout(timeout)

    def close(self) -> None:
        self._channel.close()


class _Reader(io.RawIOBase):
    def __init__(self, tls: TLSChannel) -> None:
        self._tls = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._tls.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)
