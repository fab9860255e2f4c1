"""E-mail over SMTP (aiosmtplib), configured by the `smtp_*` settings."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from cluster.settings import Settings


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


class SmtpMailer:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        tls: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
    ) -> None:
        """`tls`: "starttls" (upgrade on the submission port), "tls" (implicit, port
        465) or "none". The server's certificate is always verified, against the
        system's CAs or only those in `ca_file` (an internal relay's CA)."""
        self.host, self.port, self.sender, self.tls = host, port, sender, tls
        self.username, self.password, self.timeout_s = username, password, timeout_s
        self.ca_file = ca_file

    @classmethod
    def from_settings(cls, s: Settings) -> SmtpMailer | None:
        """None when no SMTP host is configured (e-mail is then off)."""
        if not s.smtp_host:
            return None
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        return cls(
            s.smtp_host, s.smtp_port, s.smtp_from, s.smtp_tls, s.smtp_username, password,
            s.smtp_timeout_s, str(s.smtp_ca_file) if s.smtp_ca_file else None,
        )  # fmt: skip

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls == "tls",
            start_tls=True if self.tls == "starttls" else False,
            validate_certs=True,
            cert_bundle=self.ca_file,
            timeout=self.timeout_s,
        )
