"""A real SMTP server (aiosmtpd) on a free loopback port, for the outbox relay's tests."""

import email

from bosun_testing import free_port


class SmtpServer:
    """aiosmtpd on a free loopback port; keeps every message; refuses recipients at `refuse@`.
    `smtp_options` go to aiosmtpd's SMTP (TLS context, authentication)."""

    def __init__(self, **smtp_options):
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.Message] = []
        server = self

        class Handler:
            async def handle_RCPT(self, srv, session, envelope, address, rcpt_options):
                if address.startswith("refuse"):
                    return "550 5.1.1 no such mailbox"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, srv, session, envelope):
                server.messages.append(email.message_from_bytes(envelope.content))
                return "250 Message accepted"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **smtp_options)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()
