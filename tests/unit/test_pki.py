"""ibgw pki (the app CA), validate with front.tls, the tunnel's printed configs, and the audit log's
migration to the certificate serial column."""

from __future__ import annotations

import datetime
import shutil
import sqlite3
import stat
import subprocess

import pytest
from click.testing import CliRunner
from cryptography import x509

from ibgw_provision.cli import main
from ibgw_provision.gate.audit import AuditLog
from ibgw_provision.pki.ca import Pki, expiring

INVENTORY = """\
pki:
  dir: {pki}
hosts:
  gw:
    address: 127.0.0.1
    backend: simulator
    front: {{bind: 127.0.0.1, gate: true, tls: true}}
    firewall: {{enabled: false}}
    gateways:
      - mode: paper
    apps:
      - {{name: alpha, client_id: 1, modes: [paper], sources: [127.0.0.1/32]}}
      - {{name: beta, client_id: 2, modes: [paper], sources: [127.0.0.1/32]}}
"""


@pytest.fixture
def inv(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(INVENTORY.format(pki=tmp_path / "pki"))
    return path


def ibgw(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_issue_revoke_list(inv, tmp_path):
    pki = Pki(tmp_path / "pki")
    result = ibgw("pki", "init", "-i", inv)
    assert result.exit_code == 0, result.output
    assert _mode(pki.dir) == 0o700 and _mode(pki.ca_key) == 0o600
    assert _mode(pki.server_dir("gw") / "key.pem") == 0o600
    server = x509.load_pem_x509_certificate((pki.server_dir("gw") / "cert.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["gw"]
    assert ibgw("pki", "init", "-i", inv).output.startswith("kept the app CA")  # idempotent

    assert ibgw("pki", "issue", "alpha", "-i", inv, "--days", "10").exit_code == 0
    folder = pki.app_dir("alpha")
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert _mode(folder / "key.pem") == 0o600
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["ibgw:app:alpha"]
    assert cert.subject.rfc4514_string() == "CN=alpha"
    assert (folder / "ca.pem").read_bytes() == pki.ca_cert.read_bytes()

    unknown = ibgw("pki", "issue", "gamma", "-i", inv)
    assert unknown.exit_code == 2 and "no app 'gamma'" in unknown.output

    assert ibgw("pki", "revoke", "alpha", "-i", inv).exit_code == 0
    assert pki.revoked() == [cert.serial_number]
    listing = ibgw("pki", "list", "-i", inv).output
    alpha = next(line for line in listing.splitlines() if " alpha " in line)
    assert "REVOKED" in alpha
    ibgw("pki", "issue", "beta", "-i", inv, "--days", "10")
    beta = next(line for line in ibgw("pki", "list", "-i", inv).output.splitlines() if " beta " in line)
    assert "EXPIRES SOON" in beta  # within 14 days
    assert [e.name for e in expiring(pki.entries())] == ["beta"]  # revoked alpha is not warned about


def test_an_expired_certificate_can_be_issued_for_tests(tmp_path):
    pki = Pki(tmp_path)
    pki.init("t")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    folder = pki.issue_app("old", days=1, not_before=past)
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    assert cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC)


def test_validate_secrets_wants_a_certificate_for_every_app(inv, tmp_path):
    assert ibgw("validate", "-i", inv).exit_code == 0  # without --secrets the pki is not read
    missing = ibgw("validate", "-i", inv, "--secrets")
    assert missing.exit_code == 2
    assert "hosts.gw.front.tls: cannot read" in missing.output and "ibgw pki init" in missing.output
    ibgw("pki", "init", "-i", inv)
    ibgw("pki", "issue", "alpha", "-i", inv)
    one_short = ibgw("validate", "-i", inv, "--secrets")
    assert one_short.exit_code == 2
    assert "hosts.gw.apps[1].name: no certificate issued to app beta" in one_short.output
    ibgw("pki", "issue", "beta", "-i", inv)
    assert ibgw("validate", "-i", inv, "--secrets").exit_code == 0
    (tmp_path / "pki" / "ca.key").chmod(0o644)
    loose = ibgw("validate", "-i", inv, "--secrets")
    assert loose.exit_code == 2 and "ca.key is readable by others" in loose.output


def test_front_tls_needs_the_gate(inv):
    inv.write_text(inv.read_text().replace("gate: true", "gate: false"))
    result = ibgw("validate", "-i", inv)
    assert result.exit_code == 2 and "front.tls is terminated by ibgw gate" in result.output


def test_tunnel_prints_stunnel_and_systemd(tmp_path):
    stunnel = ibgw("tunnel", "--front", "203.0.113.10:4004", "--cert", tmp_path, "--print-stunnel")
    assert stunnel.exit_code == 0, stunnel.output
    lines = set(stunnel.output.splitlines())
    for expected in (
        "client = yes",
        "accept = 127.0.0.1:4002",
        "connect = 203.0.113.10:4004",
        f"cert = {tmp_path}/cert.pem",
        f"key = {tmp_path}/key.pem",
        f"CAfile = {tmp_path}/ca.pem",
        "verifyChain = yes",
        "checkIP = 203.0.113.10",
        "sslVersionMin = TLSv1.3",
    ):
        assert expected in lines
    named = ibgw(
        "tunnel", "--front", "gw.example:4003", "--cert", tmp_path, "--mode", "live", "--print-stunnel"
    )
    assert "checkHost = gw.example" in named.output and "accept = 127.0.0.1:4001" in named.output
    unit = ibgw("tunnel", "--front", "gw.example:4003", "--cert", tmp_path, "--print-unit").output
    assert "--front gw.example:4003 --cert %d --listen 127.0.0.1:4002 --mode paper" in unit
    assert f"LoadCredential=key.pem:{tmp_path}/key.pem" in unit
    if shutil.which("systemd-analyze"):
        (tmp_path / "ibgw-tunnel-paper.service").write_text(unit)
        for check in (["verify"], ["security", "--offline=true", "--threshold=20"]):
            result = subprocess.run(
                ["systemd-analyze", *check, str(tmp_path / "ibgw-tunnel-paper.service")],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0 and "warning" not in result.stderr.lower(), result.stderr


def test_tunnel_without_certificate_files_says_which(tmp_path):
    result = ibgw("tunnel", "--front", "127.0.0.1:4004", "--cert", tmp_path)
    assert result.exit_code == 2 and "lacks cert.pem, key.pem, ca.pem" in result.output


def test_an_audit_log_from_before_tls_gains_the_serial_column(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE connections (id INTEGER PRIMARY KEY, app TEXT, client_id INTEGER NOT NULL, "
        "source TEXT NOT NULL, version INTEGER NOT NULL, started TEXT NOT NULL, ended TEXT, "
        "outcome TEXT NOT NULL, reason TEXT)"
    )
    db.execute(
        "INSERT INTO connections VALUES (1, 'a', 1, '127.0.0.1:1', 178, 'x', 'y', 'accepted', 'closed')"
    )
    db.commit()
    db.close()
    AuditLog(path).close()
    AuditLog(path).close()  # twice: the migration runs once
    rows = sqlite3.connect(path).execute("SELECT id, app, cert_serial FROM connections").fetchall()
    assert rows == [(1, "a", None)]


def test_health_warns_14_days_before_a_certificate_expires(inv, tmp_path):
    from ibgw_provision import inventory
    from ibgw_provision.observe import certificates

    ibgw("pki", "init", "-i", inv)
    loaded = inventory.load(inv)
    pki = Pki(tmp_path / "pki")
    pki.issue_app("alpha", days=10)
    pki.issue_app("beta", days=100)
    server_pem = (pki.server_dir("gw") / "cert.pem").read_text()
    assert [subject for _, subject, _ in certificates.findings(loaded, "gw", server_pem)] == ["app alpha"]
    soon = Pki(tmp_path / "other")
    soon.init("other")
    short = soon.issue_server("gw", "127.0.0.1", days=3)
    [(severity, subject, message)] = certificates.findings(loaded, "gw", (short / "cert.pem").read_text())[:1]
    assert (severity, subject) == (
        "degraded",
        "gw front",
    ) and "the front's certificate on the host" in message
    assert not isinstance(certificates.probe_context(loaded), str)  # pki init issued the probe's certificate
    (pki.app_dir("ibgw-health") / "key.pem").unlink()
    assert "run `ibgw pki init`" in certificates.probe_context(loaded)
