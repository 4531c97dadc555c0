"""A throwaway certificate authority for tests of TLS and mutual TLS (RFC 8705), made with ``cryptography``.

::

    pki = TestPKI(tmp_path)
    server = FakeOAuthServer(ssl_context=pki.server_context())
    client = pki.issue_client("my-client")          # signed by the CA: tls_client_auth
    alone = pki.self_signed_client("my-client")     # self-signed: self_signed_tls_client_auth
    TlsClientAuth.from_files(client.certfile, client.keyfile, cafile=pki.ca_file)

Keys are small and certificates short-lived: for tests only. Files are written
(``ssl`` loads certificates and keys only from files) with mode 0600.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._client_auth import certificate_thumbprint

__all__ = ["IssuedCertificate", "TestPKI"]


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its key on disk."""

    certfile: Path
    keyfile: Path
    #: RFC 8705's ``x5t#S256`` of the certificate.
    thumbprint: str
    #: The subject as RFC 4514 text (``CN=my-client``), what ``tls_client_auth_subject_dn`` names.
    subject_dn: str

    @property
    def pem(self) -> str:
        """The certificate, PEM."""
        return self.certfile.read_text()

    def client_context(self, cafile: Path | None = None) -> ssl.SSLContext:
        """A client-side TLS context presenting this certificate, trusting ``cafile`` (or the system's CAs)."""
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        return context


class TestPKI:
    """A CA of its own, a server certificate for 127.0.0.1 / localhost, and client certificates on demand.

    Args:
        directory: Where the PEM files go (a pytest ``tmp_path``).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authsession test CA")])
        self._ca_name = name
        now = _dt.datetime.now(_dt.timezone.utc)
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._ca_key, _sha256())
        )
        self.ca_file = self._write("ca.pem", _cert_pem(self._ca_cert))
        self.server = self._issue("server", "127.0.0.1", server=True)
        self._trusted: list[Path] = [self.ca_file]

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return path

    def _issue(
        self, stem: str, common_name: str, *, server: bool = False, self_signed: bool = False
    ) -> IssuedCertificate:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _dt.datetime.now(_dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject if self_signed else self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        certificate = builder.sign(key if self_signed else self._ca_key, _sha256())
        from cryptography.hazmat.primitives import serialization

        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert_pem = _cert_pem(certificate)
        return IssuedCertificate(
            certfile=self._write(f"{stem}.pem", cert_pem),
            keyfile=self._write(f"{stem}.key", key_pem),
            thumbprint=certificate_thumbprint(cert_pem),
            subject_dn=subject.rfc4514_string(),
        )

    def issue_client(self, common_name: str, *, stem: str | None = None) -> IssuedCertificate:
        """A client certificate for ``common_name``, signed by this CA (``tls_client_auth``)."""
        return self._issue(stem or f"client-{common_name}", common_name)

    def self_signed_client(self, common_name: str, *, stem: str | None = None) -> IssuedCertificate:
        """A self-signed client certificate (``self_signed_tls_client_auth``), trusted by later server contexts."""
        issued = self._issue(stem or f"self-signed-{common_name}", common_name, self_signed=True)
        # The fake server's TLS must let it through the handshake; the token endpoint then checks it is registered.
        self._trusted.append(issued.certfile)
        return issued

    def server_context(self) -> ssl.SSLContext:
        """A server-side context: the server certificate, and client certificates asked for, not required.

        Trusts this CA and every self-signed client certificate made so far, so
        their holders complete the handshake; which of them may do what is the
        fake server's decision.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.server.certfile), str(self.server.keyfile))
        for path in self._trusted:
            context.load_verify_locations(cafile=str(path))
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self, certificate: IssuedCertificate | None = None) -> ssl.SSLContext:
        """A client-side context that trusts this CA and presents ``certificate`` (None: no certificate)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if certificate is not None:
            context.load_cert_chain(str(certificate.certfile), str(certificate.keyfile))
        return context


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _cert_pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = certificate.public_bytes(serialization.Encoding.PEM)
    return data
