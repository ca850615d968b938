"""gate/tls.py's Policy: its files re-read for new connections when they change, a broken file kept out."""

from __future__ import annotations

import logging

import pytest

from ibgw_provision.gate.config import TlsFiles
from ibgw_provision.gate.tls import FilesError, Policy, certificate_refusal, peer_of

from ..kit.tls import make_pki, tls_files


def test_a_changed_crl_is_used_for_the_next_connection_and_a_broken_one_is_not(tmp_path, caplog):
    pki = make_pki(tmp_path, ["alpha"])
    policy = Policy(TlsFiles.model_validate(tls_files(pki)))
    first = policy.current()
    assert policy.current() is first  # unchanged files: the same context
    pki.revoke("alpha")
    second = policy.current()
    assert second is not first
    caplog.set_level(logging.INFO, logger="ibgw.gate")
    pki.crl.write_text("not a CRL\n")
    assert policy.current() is second  # kept, and said so
    assert any("TLS files not reloaded" in r.getMessage() for r in caplog.records)
    assert policy.current() is second  # not retried at every connection


def test_missing_files_stop_the_gate_with_a_clear_error(tmp_path):
    files = TlsFiles(ca=tmp_path / "ca.pem", cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    with pytest.raises(FilesError, match="cannot load the TLS files"):
        Policy(files)


def test_the_app_is_the_certificates_san_uri():
    cert = {
        "subject": ((("commonName", "alpha"),),),
        "subjectAltName": (("URI", "ibgw:app:alpha"),),
        "serialNumber": "0A1B",
    }
    peer = peer_of(cert)
    assert (peer.app, peer.serial, peer.subject) == ("alpha", "0A1B", "commonName=alpha")
    assert certificate_refusal("alpha", 1, peer) is None
    assert "belongs to app beta" in certificate_refusal("beta", 2, peer)
    nameless = peer_of({"subject": ((("commonName", "alpha"),),), "serialNumber": "01"})
    assert "names no app" in certificate_refusal("alpha", 1, nameless)  # the CN alone is not enough
