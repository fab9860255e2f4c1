"""Notification e-mail over TLS (deployments/notification/mailer.py) against a real local
SMTP server (aiosmtpd) with a certificate from a CA made for the test: STARTTLS with
authentication, implicit TLS, and the refusals (an untrusted certificate, a wrong
password, a server that offers no STARTTLS)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deployments.notification.mailer import SmtpMailer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
USER, PASSWORD = "nextflow", "relay-password"


@dataclass
class Certs:
    ca_file: Path
    server: ssl.SSLContext  # the SMTP server's side


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("NextFlow test CA"))
        .issuer_name(_name("NextFlow test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "server.pem", folder / "server.key")
    return Certs(ca_file, server)


@dataclass
class Inbox:
    messages: list[Any] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)  # per message: did it come over TLS
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        if ok:
            self.logins.append(USER)
        return AuthResult(success=ok, handled=False)  # the server answers 535 itself


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(certs: Certs) -> Iterator[Any]:
    """Start an SMTP server: `server(mode)` with mode "starttls" (TLS offered and
    required, login required), "tls" (implicit TLS) or "plain" (no TLS at all)."""
    started: list[Controller] = []

    def start(mode: str) -> tuple[Inbox, int]:
        inbox, port = Inbox(), _free_port()
        options: dict[str, Any] = {}
        if mode == "starttls":
            options = dict(
                tls_context=certs.server, require_starttls=True, auth_required=True,
                auth_require_tls=True, authenticator=inbox.authenticate,
            )  # fmt: skip
        elif mode == "tls":
            options = dict(ssl_context=certs.server)
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        started.append(controller)
        return inbox, port

    yield start
    for controller in started:
        controller.stop()


async def test_starttls_with_login_delivers_over_tls(server: Any, certs: Certs) -> None:
    inbox, port = server("starttls")
    mailer = SmtpMailer(
        "127.0.0.1", port, "NextFlow <no-reply@example.com>", tls="starttls",
        username=USER, password=PASSWORD, ca_file=str(certs.ca_file),
    )  # fmt: skip
    await mailer.send("owner@example.com", "Deal won: Acme", "Congratulations.")
    assert inbox.tls == [True] and inbox.logins == [USER]
    assert inbox.messages[0].rcpt_tos == ["owner@example.com"]
    assert b"Subject: Deal won: Acme" in inbox.messages[0].content


async def test_implicit_tls_delivers(server: Any, certs: Certs) -> None:
    inbox, port = server("tls")
    mailer = SmtpMailer(
        "127.0.0.1", port, "NextFlow <no-reply@example.com>", tls="tls",
        ca_file=str(certs.ca_file),
    )  # fmt: skip
    await mailer.send("agent@example.com", "Ticket assigned", "Ticket 7 is yours.")
    assert inbox.tls == [True] and inbox.messages[0].rcpt_tos == ["agent@example.com"]


async def test_refusals_send_nothing(server: Any, certs: Certs) -> None:
    inbox, port = server("starttls")
    sender = "NextFlow <no-reply@example.com>"
    # A certificate from a CA the mailer was not told to trust (the system's CAs only).
    untrusting = SmtpMailer("127.0.0.1", port, sender, username=USER, password=PASSWORD)
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusting.send("x@example.com", "s", "b")
    other_inbox, other_port = server("starttls")
    wrong = SmtpMailer(
        "127.0.0.1", other_port, sender, username=USER, password="nope",
        ca_file=str(certs.ca_file), timeout_s=5,
    )  # fmt: skip
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await wrong.send("x@example.com", "s", "b")
    # STARTTLS asked of a server that does not offer it: refused, never sent in clear.
    plain_inbox, plain_port = server("plain")
    downgraded = SmtpMailer("127.0.0.1", plain_port, sender, ca_file=str(certs.ca_file))
    with pytest.raises(aiosmtplib.SMTPException, match="(?i)starttls"):
        await downgraded.send("x@example.com", "s", "b")
    assert inbox.messages == other_inbox.messages == plain_inbox.messages == []
