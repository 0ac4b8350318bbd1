"""TLS over a channel that is not a socket (stack/hosts/tls.py), against a real
TLS server on the other end of a socketpair."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ollama_stack.stack.hosts.tls import TLSChannel
from tests.support.tls import self_signed

from .helpers import SocketChannel


@pytest.fixture
def certs(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context that trusts the server's certificate for `box.test`)."""
    cert, key = self_signed(tmp_path, "box.test")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.fixture
def pair() -> Iterator[tuple[SocketChannel, socket.socket]]:
    ours, theirs = socket.socketpair()
    channel = SocketChannel(ours)
    channel.settimeout(5)
    theirs.settimeout(5)
    yield channel, theirs
    channel.close()
    theirs.close()


def serve(far: socket.socket, context: ssl.SSLContext, work: Callable[[ssl.SSLSocket], None]):
    """Run a TLS server on ``far`` in a thread; join() it after the client is done."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work(context.wrap_socket(far, server_side=True))
        except BaseException as exc:  # the test reads it
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_bytes_round_trip_in_many_records_and_a_ragged_end(certs, pair) -> None:
    server_context, client_context = certs
    channel, far = pair
    payload = bytes(range(256)) * 1024  # 256 KiB: many 16 KiB TLS records each way

    def echo_then_drop(tls: ssl.SSLSocket) -> None:
        received = b""
        while len(received) < len(payload):
            received += tls.recv(65536)
        tls.sendall(received)
        tls.close()  # no close_notify first: what most HTTP servers do

    thread, errors = serve(far, server_context, echo_then_drop)
    tls = TLSChannel(channel, client_context, "box.test")
    tls.sendall(payload)
    back = b""
    while chunk := tls.recv(70000):
        back += chunk
    thread.join(5)
    assert not errors and back == payload


def test_a_clean_close_notify_ends_the_stream_and_is_answered(certs, pair) -> None:
    server_context, client_context = certs
    channel, far = pair

    def answer_and_unwrap(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"line one\nline two\n")
        tls.unwrap()

    thread, errors = serve(far, server_context, answer_and_unwrap)
    reader = TLSChannel(channel, client_context, "box.test").makefile("rb")
    assert reader.readline() == b"line one\n"
    assert reader.read() == b"line two\n"
    thread.join(2)  # the server waits (5 s) for our close_notify in reply
    assert not thread.is_alive() and not errors


def test_the_name_must_be_on_the_certificate(certs, pair) -> None:
    server_context, client_context = certs
    channel, far = pair
    serve(far, server_context, lambda tls: None)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        TLSChannel(channel, client_context, "other.test")
    assert caught.value.verify_message == (
        "Hostname mismatch, certificate is not valid for 'other.test'."
    )


def test_an_untrusted_certificate_is_refused(certs, pair) -> None:
    server_context, _ = certs
    channel, far = pair
    serve(far, server_context, lambda tls: None)
    system_only = ssl.create_default_context()  # SSL_CERT_FILE is not set: the system's CAs

    with pytest.raises(ssl.SSLCertVerificationError):
        TLSChannel(channel, system_only, "box.test")


def test_a_silent_peer_times_out_at_the_channels_timeout(certs, pair) -> None:
    _, client_context = certs
    channel, _far = pair  # nobody answers the ClientHello
    channel.settimeout(0.3)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        TLSChannel(channel, client_context, "box.test")
    assert time.monotonic() - began < 2


def test_a_peer_that_hangs_up_mid_handshake_is_an_error_not_a_spin(certs, pair) -> None:
    _, client_context = certs
    channel, far = pair

    def read_the_hello_and_hang_up() -> None:
        far.recv(4096)
        far.close()

    thread = threading.Thread(target=read_the_hello_and_hang_up, daemon=True)
    thread.start()
    with pytest.raises(ssl.SSLEOFError):
        TLSChannel(channel, client_context, "box.test")
    thread.join(5)


def test_close_closes_the_channel(certs, pair) -> None:
    server_context, client_context = certs
    channel, far = pair
    thread, _ = serve(far, server_context, lambda tls: tls.recv(1))
    TLSChannel(channel, client_context, "box.test").close()
    thread.join(5)
    assert channel.closed and not thread.is_alive()
