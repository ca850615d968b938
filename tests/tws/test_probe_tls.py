"""The probe's TLS over an already connected stream (what health's front probe gets through a jump
host's SSH channel): a socketpair stands for the channel; the server's certificate must name the
front's address (an IP SAN), the way a direct TLS connection checks it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading

import pytest

from ibgw_provision.observe.screen import _join  # bytes both ways until either side ends
from ibgw_provision.pki.ca import Pki
from ibgw_provision.tws.probe import ProbeError, probe

FRONT = "198.18.0.10"  # only a name in a certificate: nothing connects to it (a socketpair carries all)


def _front(pki: Pki, host: str, stream: socket.socket, sim_port: int) -> threading.Thread:
    """The front's end of the stream: TLS with `host`'s certificate, then bytes both ways to the sim."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_dir(host) / "cert.pem", pki.server_dir(host) / "key.pem")

    def serve() -> None:
        stream.settimeout(10)
        try:
            tls = server.wrap_socket(stream, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused the certificate
            stream.close()
            return
        with tls, socket.create_connection(("127.0.0.1", sim_port), timeout=10) as gateway:
            _join(tls, gateway)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("issued_for", [FRONT, "198.18.0.99"], ids=["right IP SAN", "wrong IP SAN"])
def test_tls_over_a_forwarded_stream_checks_the_fronts_ip_address(tmp_path, sim, issued_for):
    pki = Pki(tmp_path / "pki")
    pki.init("test")
    pki.issue_server("front", issued_for)
    client = ssl.create_default_context(cafile=pki.ca_cert)
    ours, theirs = socket.socketpair()
    server = _front(pki, "front", theirs, sim.port)
    if issued_for == FRONT:
        result = asyncio.run(probe(FRONT, 4004, 9999, timeout=10, sock=ours, tls=client))
        assert result.accounts and result.server_version > 0
    else:
        with pytest.raises(ProbeError, match=rf"^TLS with {FRONT}:4004 failed: .*CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(probe(FRONT, 4004, 9999, timeout=10, sock=ours, tls=client))
    server.join(10)
    assert not server.is_alive()
    assert ours.fileno() == -1  # the probe closes the stream it was given
