"""Where outbox messages go: email over SMTP (or a Maildir sink) and signed HTTP webhooks,
and how a workflow says which recipient type goes where (a routing file, not code).

A channel's `send` never raises for the receiver's answer; it returns a `ChannelResult`:
`delivered` (a webhook receiver answered 2xx), `sent` (an SMTP server took it: delivery is
only known if no bounce comes back), `retrying` (worth another try later, with the
receiver's Retry-After when it gave one) or `failed` (refused for good). Every message
carries its idempotency key to the receiver (Message-ID and `X-Bosun-Idempotency-Key` for
email, the `Idempotency-Key` header for webhooks) and its attempt number, so a receiver
can tell a re-send after a crash from a new message.

Content is rendered from the routing's templates with the declared fields only; each
field is checked by its kind (id, decimal, date, text) and free text is scanned for
personal data (guardrails/input_guards.py): a message that carries a kind of personal
data the routing does not allow for that recipient type is refused, never sent.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import mailbox
import re
import smtplib
import ssl
import string
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field

from guardrails.input_guards import redact_pii
from orchestration.core import clock, settings
from resources.env import resolved

if TYPE_CHECKING:  # imported when a webhook is sent: the code location and run workers load without it
    import httpx

KEY_HEADER = "X-Bosun-Idempotency-Key"
ATTEMPT_HEADER = "X-Bosun-Attempt"
SIGNATURE_HEADER = "Bosun-Signature"


# ---- the routing a workflow declares ------------------------------------------------------
class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str
    text: str


class RecipientRoute(BaseModel):
    """One recipient type of one workflow: its channel, address, templates and fields."""

    model_config = ConfigDict(extra="forbid")
    channel: Literal["email", "webhook"]
    # `$recipient` is the message's recipient id (email: the address; webhook: in the body).
    address: str = "$recipient"
    templates: dict[str, Template]  # per message kind: notice, correction
    # The only fields a template (and a webhook body) may carry, each with its kind.
    fields: dict[str, Literal["id", "decimal", "date", "text"]] = Field(default_factory=dict)
    # Kinds of personal data (email, iban, card, phone) this recipient may be sent.
    allowed_personal_data: list[str] = Field(default_factory=list)
    # Webhooks: the URL and the signing secret come from these environment variables.
    url_env: Optional[str] = None
    secret_env: Optional[str] = None
    timeout_s: float = 10.0
    attempts: int = 3  # within one relay pass, with exponential backoff from backoff_s
    backoff_s: float = 0.5
    max_inline_wait_s: float = 10.0  # a longer Retry-After is honoured by a later pass
    max_deliveries: int = 6  # relay passes before a message that keeps failing is `failed`
    retry_after_s: float = 30.0  # the wait before the next pass, doubling per pass
    on_undeliverable: Literal["escalate", "record"] = "escalate"


class NotificationRouting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str
    recipients: dict[str, RecipientRoute]


def load_routing(path: str | Path) -> NotificationRouting:
    with open(path) as fh:
        return NotificationRouting.model_validate(yaml.safe_load(fh))


# ---- a rendered message and what a channel answered -----------------------------------------
@dataclass(frozen=True)
class OutgoingMessage:
    key: str
    workflow: str
    kind: str  # notice | correction
    recipient: str
    recipient_type: str
    address: str
    subject: str
    text: str
    fields: dict
    attempt: int  # 1 for the first claim; a re-send after a crash has a higher one
    possible_duplicate: bool = False  # an earlier attempt may have reached the receiver
    corrects: Optional[str] = None


@dataclass(frozen=True)
class ChannelResult:
    outcome: Literal["sent", "delivered", "retrying", "failed"]
    detail: str = ""
    ref: Optional[str] = None
    retry_after_s: Optional[float] = None


class ContentRefused(ValueError):
    """The message carries what its routing does not allow; it is never sent."""


class ChannelNotConfigured(RuntimeError):
    """The route's channel lacks a setting (a webhook URL variable unset): tried again later."""


_ID = re.compile(r"^[A-Za-z0-9._:/#@+-]{1,450}$")


def _checked(name: str, kind: str, value, allowed_pii: set[str]) -> str:
    text = "" if value is None else str(value)
    if kind == "id":
        if not _ID.fullmatch(text):
            raise ContentRefused(f"field {name} is not an identifier")
    elif kind == "decimal":
        try:
            Decimal(text)
        except InvalidOperation:
            raise ContentRefused(f"field {name} is not a decimal") from None
    elif kind == "date":
        try:
            date.fromisoformat(text)
        except ValueError:
            raise ContentRefused(f"field {name} is not a date") from None
    if kind in ("id", "text"):
        _, found = redact_pii(text)
        # An identifier is digits by nature (INV-0001234 looks like a phone number to the
        # scanner); what it must not be is an address or an account.
        found = [f for f in found if kind == "text" or f in ("email", "iban")]
        disallowed = sorted(set(found) - allowed_pii)
        if disallowed:
            raise ContentRefused(
                f"field {name} carries personal data not allowed for this recipient: {', '.join(disallowed)}"
            )
    return text


def render(message: dict, route: RecipientRoute, attempt: int, in_doubt: int) -> OutgoingMessage:
    """The message as it leaves: templates over the declared, checked fields only."""
    kind = message["kind"]
    template = route.templates.get(kind)
    if template is None:
        raise ContentRefused(f"no {kind} template for recipient type {message['recipient_type']}")
    allowed = set(route.allowed_personal_data)
    body = message.get("body") or {}
    fields = {name: _checked(name, k, body.get(name), allowed) for name, k in route.fields.items()}
    recipient = _checked("recipient", "id", message["recipient"], allowed)
    values = {
        **fields,
        "recipient": recipient,
        "key": message["idempotency_key"],
        "retracts": message.get("corrects") or "",
    }
    try:
        subject = string.Template(template.subject).substitute(values)
        text = string.Template(template.text).substitute(values)
        address = string.Template(route.address).substitute(values)
    except (KeyError, ValueError) as err:
        raise ContentRefused(f"template uses a field the routing does not declare: {err}") from None
    return OutgoingMessage(
        key=message["idempotency_key"],
        workflow=message["workflow"],
        kind=kind,
        recipient=recipient,
        recipient_type=message["recipient_type"],
        address=address,
        subject=subject,
        text=text,
        fields=fields,
        attempt=attempt,
        possible_duplicate=in_doubt > 0,
        corrects=message.get("corrects"),
    )


# ---- email --------------------------------------------------------------------------------
def message_id_for(key: str, domain: str) -> str:
    """The same key always gets the same Message-ID: a re-send is recognisably the same mail."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


class EmailChannel(dg.ConfigurableResource):
    """SMTP when `host` is set (BOSUN_SMTP_*), else a Maildir sink under BOSUN_HOME (no
    service needed: `make run` shows messages leaving there). `tls`: none, starttls or ssl."""

    host: Optional[str] = None
    port: int = 25
    username: Optional[str] = None
    password: Optional[str] = None
    tls: str = "none"
    tls_verify: bool = True
    tls_ca_file: Optional[str] = None  # a private CA's certificate (PEM) to verify the server with
    from_address: str = "bosun@localhost"
    message_id_domain: str = "bosun.local"
    timeout_s: float = 10.0
    sink_dir: Optional[str] = None

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield (name, "**********") if name == "password" else (name, value)

    @property
    def sink_path(self) -> Path:
        return Path(resolved(self.sink_dir) or settings.bosun_home() / "outbox" / "sent")

    def build(self, msg: OutgoingMessage) -> EmailMessage:
        domain = resolved(self.message_id_domain)
        mail = EmailMessage()
        mail["From"] = resolved(self.from_address)
        mail["To"] = msg.address
        mail["Subject"] = msg.subject
        mail["Date"] = email.utils.format_datetime(clock.now())
        mail["Message-ID"] = message_id_for(msg.key, domain)
        mail[KEY_HEADER] = msg.key
        mail[ATTEMPT_HEADER] = str(msg.attempt)
        if msg.possible_duplicate:
            mail["X-Bosun-Possible-Duplicate"] = "yes"
        if msg.corrects:  # the correction threads under the message it retracts
            mail["In-Reply-To"] = mail["References"] = message_id_for(msg.corrects, domain)
        mail.set_content(msg.text)
        return mail

    def send(self, msg: OutgoingMessage) -> ChannelResult:
        """One message on a connection of its own."""
        session = self.open()
        try:
            return session.send(msg)
        finally:
            session.close()

    def open(self) -> "EmailSession":
        """A session that keeps one SMTP connection for many messages (a relay pass)."""
        return EmailSession(self)

    def _connect(self, host: str) -> smtplib.SMTP:
        mode = (resolved(self.tls) or "none").lower()
        # Outside a run (the CLI relay) an EnvVar.int field is still the variable: read it.
        port = int(self.port.get_value()) if hasattr(self.port, "get_value") else self.port
        context = ssl.create_default_context(cafile=resolved(self.tls_ca_file) or None)
        if not self.tls_verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if mode == "ssl":
            smtp = smtplib.SMTP_SSL(host, port, timeout=self.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=self.timeout_s)
            if mode == "starttls":
                smtp.starttls(context=context)
        user = resolved(self.username)
        if user:
            smtp.login(user, resolved(self.password) or "")
        return smtp


class EmailSession:
    """Sends over one SMTP connection, opened on first use and dropped on any error (the
    next message opens a new one); `close()` ends it with QUIT."""

    def __init__(self, channel: EmailChannel):
        self.channel, self._smtp = channel, None

    def send(self, msg: OutgoingMessage) -> ChannelResult:
        channel = self.channel
        mail = channel.build(msg)
        mid = mail["Message-ID"]
        host = resolved(channel.host)
        if not host:
            for sub in ("tmp", "new", "cur"):
                (channel.sink_path / sub).mkdir(parents=True, exist_ok=True)
            mailbox.Maildir(str(channel.sink_path), create=False).add(mail)
            return ChannelResult("sent", f"written to the Maildir sink {channel.sink_path}", ref=mid)
        try:
            if self._smtp is None:
                self._smtp = channel._connect(host)
            refused = self._smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as err:  # smtplib has reset the transaction
            return _smtp_result(err.recipients and next(iter(err.recipients.values())), mid)
        except smtplib.SMTPResponseException as err:
            self.close()
            return _smtp_result((err.smtp_code, err.smtp_error), mid)
        except (smtplib.SMTPException, OSError) as err:
            # The connection broke: the server may or may not have taken it. Retried with
            # the same Message-ID, so a duplicate is recognisable.
            self.close()
            return ChannelResult("retrying", f"SMTP unreachable or disconnected ({type(err).__name__})", ref=mid)
        if refused:
            return _smtp_result(next(iter(refused.values())), mid)
        return ChannelResult("sent", "250 accepted", ref=mid)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


def email_channel_from_env() -> EmailChannel:
    """SMTP when BOSUN_SMTP_HOST is set (BOSUN_SMTP_PORT, BOSUN_SMTP_TLS none|starttls|ssl,
    BOSUN_SMTP_USERNAME, BOSUN_SMTP_PASSWORD, BOSUN_SMTP_FROM, BOSUN_SMTP_MESSAGE_ID_DOMAIN,
    BOSUN_SMTP_CA_FILE, as
    EnvVars), else the Maildir sink (BOSUN_OUTBOX_SINK_DIR, default BOSUN_HOME/outbox/sent):
    messages leave with no service configured."""
    import os

    def env(name):
        return dg.EnvVar(name) if os.environ.get(name) else None

    kwargs: dict = {
        "sink_dir": env("BOSUN_OUTBOX_SINK_DIR"),
        "from_address": env("BOSUN_SMTP_FROM"),
        "message_id_domain": env("BOSUN_SMTP_MESSAGE_ID_DOMAIN"),
        "tls_ca_file": env("BOSUN_SMTP_CA_FILE"),
    }
    if os.environ.get("BOSUN_SMTP_HOST"):
        kwargs.update(
            host=env("BOSUN_SMTP_HOST"),
            username=env("BOSUN_SMTP_USERNAME"),
            password=env("BOSUN_SMTP_PASSWORD"),
            tls=env("BOSUN_SMTP_TLS"),
            port=dg.EnvVar.int("BOSUN_SMTP_PORT") if os.environ.get("BOSUN_SMTP_PORT") else None,
        )
    return EmailChannel(**{k: v for k, v in kwargs.items() if v is not None})


def _smtp_result(reply, mid: str) -> ChannelResult:
    code, text = reply or (550, b"refused")
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    detail = f"SMTP {code} {text}"[:1000]
    if 400 <= int(code) < 500:
        return ChannelResult("retrying", detail, ref=mid)
    return ChannelResult("failed", detail, ref=mid)


# ---- bounces --------------------------------------------------------------------------------
def read_bounces(maildir: str | Path) -> list[tuple[str, dict]]:
    """Bounce reports (RFC 3464 delivery status notifications, or any mail that quotes the
    original's headers) in a Maildir: [(mailbox key, {key, message_id, reason})]. A report
    that names neither our key header nor a Message-ID is left alone."""
    path = Path(maildir)
    if not (path / "new").exists() and not (path / "cur").exists():
        return []
    box = mailbox.Maildir(str(path), create=False)
    out = []
    for mkey in list(box.keys()):
        try:
            report = box.get_message(mkey)
        except (KeyError, FileNotFoundError):
            continue
        out.append((mkey, _bounce_of(report)))
    return [(k, b) for k, b in out if b.get("key") or b.get("message_id")]


def _bounce_of(report) -> dict:
    key = mid = None
    reason = "bounced"
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            for block in part.get_payload() or []:
                status, diag = block.get("Status"), block.get("Diagnostic-Code")
                if status or diag:
                    reason = " ".join(x for x in (status, diag) if x)
        elif ctype in ("message/rfc822", "text/rfc822-headers"):
            payload = part.get_payload()
            quoted = payload[0] if isinstance(payload, list) and payload else None
            if quoted is None:
                import email as _email

                quoted = _email.message_from_string(part.get_payload(decode=True).decode(errors="replace"))
            key = key or quoted.get(KEY_HEADER)
            mid = mid or quoted.get("Message-ID")
    return {"key": key, "message_id": mid, "reason": reason[:1000]}


def remove_bounce(maildir: str | Path, mkey: str) -> None:
    try:
        mailbox.Maildir(str(maildir), create=False).remove(mkey)
    except KeyError:
        pass


# ---- webhooks -------------------------------------------------------------------------------
def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`: the receiver recomputes it with
    the shared secret and rejects an old timestamp (replay)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Retry-After as seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - clock.now()).total_seconds())


@dataclass
class WebhookChannel:
    """POSTs the message as JSON, signed; retries timeouts, connection errors, 408, 425,
    429 and 5xx with exponential backoff, waiting at least the receiver's Retry-After (a
    wait longer than `max_inline_wait_s` is left to a later pass); another 4xx is final."""

    url: str
    secret: Optional[str]
    timeout_s: float = 10.0
    attempts: int = 3
    backoff_s: float = 0.5
    max_inline_wait_s: float = 10.0
    sleep: object = field(default=time.sleep, repr=False)
    _client: Optional[httpx.Client] = field(default=None, repr=False)

    def __repr__(self) -> str:  # the URL may hold a token, the secret is one
        return "WebhookChannel(url=**********)"

    @property
    def client(self) -> httpx.Client:
        # One client (connection pool, TLS context) per channel: building one per request
        # costs ~0.3 s of certificate loading.
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout_s)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def send(self, msg: OutgoingMessage) -> ChannelResult:
        body = json.dumps(
            {
                "key": msg.key,
                "workflow": msg.workflow,
                "kind": msg.kind,
                "recipient": msg.recipient,
                "recipient_type": msg.recipient_type,
                "subject": msg.subject,
                "text": msg.text,
                "fields": msg.fields,
                "corrects": msg.corrects,
            },
            sort_keys=True,
        ).encode()
        result = ChannelResult("retrying", "not tried")
        for i in range(max(1, self.attempts)):
            result = self._post(msg, body)
            if result.outcome != "retrying" or i == self.attempts - 1:
                break
            wait = max(self.backoff_s * (2**i), result.retry_after_s or 0.0)
            if wait > self.max_inline_wait_s:
                break
            self.sleep(wait)
        return result

    def _post(self, msg: OutgoingMessage, body: bytes) -> ChannelResult:
        import httpx

        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": msg.key,
            "Bosun-Delivery-Attempt": str(msg.attempt),
        }
        if msg.possible_duplicate:
            headers["Bosun-Possible-Duplicate"] = "yes"
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, int(clock.now().timestamp()), body)
        try:
            resp = self.client.post(self.url, content=body, headers=headers)
        # `from None` and no URL in the text: it may hold a token.
        except httpx.TimeoutException:
            return ChannelResult("retrying", f"webhook timed out after {self.timeout_s} s")
        except httpx.TransportError as exc:
            return ChannelResult("retrying", f"webhook unreachable ({type(exc).__name__})")
        code = resp.status_code
        ref = resp.headers.get("x-request-id")
        if 200 <= code < 300:
            return ChannelResult("delivered", f"HTTP {code}", ref=ref)
        if code in (408, 425, 429) or code >= 500:
            return ChannelResult(
                "retrying", f"HTTP {code}", retry_after_s=retry_after_seconds(resp.headers.get("retry-after"))
            )
        return ChannelResult("failed", f"HTTP {code} (refused)")


def webhook_for(route: RecipientRoute) -> WebhookChannel:
    """The route's webhook with its URL and secret read from the environment now."""
    import os

    url = os.environ.get(route.url_env or "", "")
    if not url:
        raise ChannelNotConfigured(f"webhook URL variable {route.url_env} is not set")
    secret = os.environ.get(route.secret_env) if route.secret_env else None
    return WebhookChannel(
        url=url,
        secret=secret,
        timeout_s=route.timeout_s,
        attempts=route.attempts,
        backoff_s=route.backoff_s,
        max_inline_wait_s=route.max_inline_wait_s,
    )


def utc(dt: Optional[datetime]) -> Optional[datetime]:
    """A datetime read back from SQLite has no zone; it was written in UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
