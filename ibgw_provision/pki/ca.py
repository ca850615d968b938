"""ibgw's app CA, on the operator machine: the CA, the fronts' server certificates, one certificate
per app, and the revocation list (front.tls).

Layout of a pki directory (0700; every key 0600):

    ca.pem, ca.key          the app CA (ECDSA P-256)
    crl.pem                 its CRL, re-signed at each revocation; provisioning installs it
    servers/HOST/           cert.pem, key.pem: the front's certificate (SANs: address and name)
    apps/APP/               cert.pem, key.pem, ca.pem: the folder to copy to the app's machine

An app's certificate names the app in its subject CN and, for the gate, in the SAN URI
`ibgw:app:APP`. Keys are ECDSA P-256: TLS 1.3 in OpenSSL, Node and stunnel all take them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APP_URI = "ibgw:app:"
CA_DAYS = 3650
SERVER_DAYS = 825
APP_DAYS = 365
CRL_DAYS = 3650  # the gate refuses every app once its CRL is past nextUpdate: re-signed at each revoke
Key = ec.EllipticCurvePrivateKey


class PkiError(Exception):
    """A pki directory that cannot be used as asked (no CA yet, an unknown app, ...)."""


@dataclass(frozen=True)
class Entry:
    kind: str  # ca, server or app
    name: str
    serial: str  # hex, upper case: as the gate audits it
    not_after: datetime.datetime
    revoked: bool
    path: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically, created with `mode` (a key is never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def serial_hex(cert: x509.Certificate) -> str:
    """Hex, upper case, whole bytes: as OpenSSL (and so the gate's audit log) writes it."""
    digits = format(cert.serial_number, "X")
    return digits.zfill(len(digits) + len(digits) % 2)


class Pki:
    def __init__(self, directory: Path):
        self.dir = directory

    # ---- paths -----------------------------------------------------------------------------

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    def server_dir(self, host: str) -> Path:
        return self.dir / "servers" / host

    def app_dir(self, app: str) -> Path:
        return self.dir / "apps" / app

    # ---- the CA ----------------------------------------------------------------------------

    def init(self, name: str) -> bool:
        """Create the CA and an empty CRL unless they exist. True if created."""
        if self.ca_cert.exists():
            if not self.crl.exists():
                self._sign_crl([])
            return False
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ibgw app CA ({name[:40]})")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(self.ca_key, _key_pem(key), 0o600)
        _write(self.ca_cert, _cert_pem(cert), 0o644)
        self._sign_crl([])
        return True

    def _ca(self) -> tuple[x509.Certificate, Key]:
        if not self.ca_cert.exists():
            raise PkiError(f"no app CA in {self.dir}: run `ibgw pki init` first")
        cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _issue(
        self,
        subject: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        days: int,
        not_before: datetime.datetime | None,
    ) -> tuple[x509.Certificate, Key]:
        ca_cert, ca_key = self._ca()
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - datetime.timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    # ---- servers and apps ------------------------------------------------------------------

    def issue_server(self, host: str, address: str, days: int = SERVER_DAYS) -> Path:
        """The front's certificate for `host`: SANs its address (IP or DNS name) and its name."""
        sans: list[x509.GeneralName] = []
        for name in dict.fromkeys([address, host]):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert, key = self._issue(host, sans, ExtendedKeyUsageOID.SERVER_AUTH, days, None)
        directory = self.server_dir(host)
        _write(directory / "key.pem", _key_pem(key), 0o600)
        _write(directory / "cert.pem", _cert_pem(cert), 0o644)
        return directory

    def issue_app(self, app: str, days: int = APP_DAYS, not_before: datetime.datetime | None = None) -> Path:
        """The app's key, certificate and the CA's certificate, in the folder to copy to its machine."""
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(APP_URI + app)]
        cert, key = self._issue(app, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days, not_before)
        directory = self.app_dir(app)
        _write(directory / "key.pem", _key_pem(key), 0o600)
        _write(directory / "cert.pem", _cert_pem(cert), 0o644)
        _write(directory / "ca.pem", self.ca_cert.read_bytes(), 0o644)
        return directory

    def revoke(self, app: str) -> str:
        """Add the app's current certificate to the CRL (re-signed); its serial."""
        path = self.app_dir(app) / "cert.pem"
        if not path.exists():
            raise PkiError(f"no certificate issued to app {app} in {self.dir}")
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        revoked = self.revoked()
        if cert.serial_number not in revoked:
            self._sign_crl([*revoked, cert.serial_number])
        return serial_hex(cert)

    def revoked(self) -> list[int]:
        if not self.crl.exists():
            return []
        return [r.serial_number for r in x509.load_pem_x509_crl(self.crl.read_bytes())]

    def _sign_crl(self, serials: list[int]) -> None:
        ca_cert, ca_key = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=CRL_DAYS))
        )
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        _write(
            self.crl, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), 0o644
        )

    # ---- listing -----------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """The CA, every server and every app certificate, with expiry and revocation."""
        revoked = set(self.revoked())
        found = []
        for kind, path in self._cert_paths():
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            name = path.parent.name if kind != "ca" else "ca"
            found.append(
                Entry(
                    kind,
                    name,
                    serial_hex(cert),
                    cert.not_valid_after_utc,
                    cert.serial_number in revoked,
                    path,
                )
            )
        return found

    def _cert_paths(self) -> list[tuple[str, Path]]:
        paths = [("ca", self.ca_cert)] if self.ca_cert.exists() else []
        paths += [("server", p) for p in sorted((self.dir / "servers").glob("*/cert.pem"))]
        return paths + [("app", p) for p in sorted((self.dir / "apps").glob("*/cert.pem"))]


def expiring(entries: list[Entry], days: int = 14, now: datetime.datetime | None = None) -> list[Entry]:
    """The certificates (not revoked) that expire within `days`, or have expired."""
    limit = (now or _now()) + datetime.timedelta(days=days)
    return [e for e in entries if not e.revoked and e.not_after <= limit]


def not_after(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc
