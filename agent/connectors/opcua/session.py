"""The asyncua client as this connector uses it: the one place where asyncua's ways become ours.

Two things asyncua (2.x) does not do the way a gateway needs, handled here and nowhere else:

* **A refused secure channel.** A server that rejects the client certificate while opening the
  secure channel answers the OpenSecureChannel request with a ServiceFault (OPC 10000-6 §6.7.4;
  node-opcua, open62541 and the .NET stack do this; asyncua's own server refuses later, at
  CreateSession). asyncua parses that answer as an OpenSecureChannelResponse, logs a
  `NotEnoughData` traceback and fails with an empty `AssertionError`, so the status the server
  sent (BadSecurityChecksFailed, BadCertificateUntrusted, ...) was lost. `new_client` gives each
  connection a check that reads such a fault and fails the channel with its status code
  (`ua.UaStatusCodeError`), which `describe_failure` turns into one actionable line.
* **Log noise.** asyncua logs, with tracebacks, failures that reach the connector as exceptions
  anyway (a lost server, a refused request, an answer it cannot parse). The filter below drops the
  duplicates and reduces unparseable answers to one line without a traceback, so a retry loop
  against a refusing server is one warning from the connector, not a 20-line traceback per try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncua
from asyncua import Client, ua
from asyncua.common.utils import Buffer
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from cryptography import x509

from agent.connectors.opcua.codec import status_name
from agent.connectors.opcua.config import OpcUaSourceConfig
from runtime.errors import ConnectError

__all__ = ["certificate_application_uri", "describe_failure", "new_client", "service_fault_status"]

log = logging.getLogger("twin.connector.opcua")

SESSION_TIMEOUT_MS = 60_000  # a dead client's session is freed by the server after this

CERTIFICATE_REFUSALS = frozenset({
    "BadCertificateUntrusted", "BadCertificateInvalid", "BadCertificateUriInvalid",
    "BadCertificateUseNotAllowed", "BadCertificateTimeInvalid", "BadCertificateRevoked",
    "BadCertificateIssuerRevoked", "BadCertificateRevocationUnknown", "BadSecurityChecksFailed",
    "BadCertificateHostNameInvalid", "BadCertificatePolicyCheckFailed", "BadCertificateIssuerTimeInvalid",
    "BadCertificateIssuerUseNotAllowed", "BadCertificateChainIncomplete",
})
USER_REFUSALS = frozenset({"BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"})
CONNECTION_LOST = frozenset({
    "BadShutdown", "BadServerHalted", "BadConnectionClosed", "BadSecureChannelClosed", "BadSessionClosed",
    "BadSessionIdInvalid", "BadTimeout", "BadRequestTimeout", "BadCommunicationError", "BadNotConnected",
    "BadServerNotConnected", "BadConnectionRejected", "BadTcpInternalError", "BadSecureChannelIdInvalid",
})
_DUPLICATES = ("ServiceFault (", "Got error status from server")  # raised to the connector as well
_SERVICE_FAULT = ua.FourByteNodeId(ua.ObjectIds.ServiceFault_Encoding_DefaultBinary)


class _ReportedElsewhere(logging.Filter):
    """Drops asyncua's own reports of failures that reach the connector as exceptions anyway, and
    strips the traceback from its report of an answer it could not parse (one line is enough)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConnectionError | TimeoutError):
            return False
        message = record.getMessage()
        if message.startswith(_DUPLICATES) or "but connection is closed" in message:
            return False
        if record.exc_info and message.startswith("Exception raised while parsing message from server"):
            exc = record.exc_info[1]
            record.msg, record.args = "%s: %s: %s", (message, type(exc).__name__, exc)
            record.exc_info = record.exc_text = None
        return True


for _name in ("asyncua.client.client", "asyncua.client.ua_session.UaSession",
              "asyncua.client.ua_client.UaClient", "asyncua.client.ua_client.UASocketProtocol"):
    if not any(isinstance(f, _ReportedElsewhere) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_ReportedElsewhere())


def service_fault_status(msg: Any) -> ua.StatusCode | None:
    """The status of a ServiceFault sent in answer to OpenSecureChannel, or None for any other message.

    Only asymmetric (OpenSecureChannel) messages are looked at; the body is read from a copy."""
    if not isinstance(msg, ua.Message) or not isinstance(msg.SecurityHeader(), ua.AsymmetricAlgorithmHeader):
        return None
    body: Buffer = msg.body()
    try:
        if nodeid_from_binary(body) != _SERVICE_FAULT:
            return None
        header = struct_from_binary(ua.ResponseHeader, body)
    except Exception:  # a truncated fault: let asyncua report what it can
        return None
    status: ua.StatusCode = header.ServiceResult
    return None if status.is_good() else status


def _raise_channel_refusals(client: Client) -> None:
    """Make each new connection of `client` fail with the status of a refused OpenSecureChannel.

    asyncua builds a fresh socket protocol per connection (`UaClient._make_protocol`); the check
    wraps that protocol's message dispatch. Raising `UaStatusCodeError` there is asyncua's own path
    for a bad status: it fails the pending requests with it and closes the socket."""
    uaclient = client.uaclient
    make_protocol: Callable[[], Any] | None = getattr(uaclient, "_make_protocol", None)
    if make_protocol is None:  # asyncua before 2.x builds its protocol inline: refusals stay unreadable there
        log.debug("asyncua %s has no UaClient._make_protocol; a refused secure channel is not decoded",
                  getattr(asyncua, "__version__", "?"))
        return

    def make_checked_protocol() -> Any:
        protocol = make_protocol()
        dispatch = protocol._process_received_message

        def checked(msg: Any) -> None:
            status = service_fault_status(msg)
            if status is not None:
                raise ua.UaStatusCodeError(status.value)
            dispatch(msg)

        protocol._process_received_message = checked
        return protocol

    uaclient._make_protocol = make_checked_protocol


async def new_client(cfg: OpcUaSourceConfig, application_uri: str, password: str) -> Client:
    """An asyncua client for one connection attempt, with security and the refusal check set up."""
    client = Client(cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=cfg.timeout_s)
    client.name = client.description = f"facility-twin {cfg.name}"
    client.application_uri = application_uri
    client.session_timeout = SESSION_TIMEOUT_MS
    if cfg.username:
        client.set_user(cfg.username)
        client.set_password(password)
    if cfg.security_policy == "Basic256Sha256":
        await client.set_security(
            SecurityPolicyBasic256Sha256, cfg.certificate_file, cfg.private_key_file,
            server_certificate=cfg.server_certificate_file or None,
            mode=getattr(ua.MessageSecurityMode, cfg.security_mode),
        )
    _raise_channel_refusals(client)
    return client


def describe_failure(exc: BaseException, cfg: OpcUaSourceConfig) -> tuple[str, str]:
    """(reason for the BAD readings, one log line a person can act on) for a failed connection."""
    if isinstance(exc, ua.UaStatusCodeError):
        name = status_name(ua.StatusCode(exc.code))
        if name in CERTIFICATE_REFUSALS:
            if not cfg.certificate_file:
                return name, (f"the server refused the connection for want of a client certificate ({name}); "
                              "create one with `twin-agent opcua-cert` and set certificate_file")
            return name, (f"the server refused the client certificate ({name}); trust {cfg.certificate_file} on "
                          "the server (and check the certificate's application URI and validity dates)")
        if name in USER_REFUSALS:
            return name, f"server refused user {cfg.username or '(anonymous)'} ({name}); check username/password"
        if name in CONNECTION_LOST:
            return "disconnected", f"connection lost ({name})"
        return name, f"server answered {name}"
    if isinstance(exc, ConnectionRefusedError):
        return "disconnected", "connection refused (is the server running and the port right?)"
    if isinstance(exc, TimeoutError):
        return "disconnected", f"no answer within timeout_s = {cfg.timeout_s}"
    if isinstance(exc, ConnectError):
        return "disconnected", str(exc)
    if isinstance(exc, OSError):
        return "disconnected", f"network error: {exc.strerror or exc}"
    if isinstance(exc, ua.UaError):
        text = str(exc)
        if "No matching endpoints" in text:
            return "BadSecurityPolicyRejected", (
                f"the server offers no endpoint with security_policy = {cfg.security_policy}, "
                f"security_mode = {cfg.security_mode}")
        if "certificate mismatch" in text:
            return "BadCertificateInvalid", (f"the server's certificate differs from server_certificate_file "
                                             f"{cfg.server_certificate_file}")
        return "disconnected", f"OPC-UA error: {text}"
    if isinstance(exc, ValueError) and cfg.security_policy != "None":
        return "BadCertificateInvalid", f"cannot load certificate or key: {exc}"
    return "disconnected", f"unexpected {type(exc).__name__}: {exc}"


def certificate_application_uri(path: str) -> str:
    """The URI in a certificate's subjectAltName: the client must announce exactly this one."""
    data = Path(path).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else ""
