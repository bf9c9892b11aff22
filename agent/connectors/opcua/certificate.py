"""`twin-agent opcua-cert`: the agent's OPC-UA application instance certificate and private key.

An OPC-UA server checks more than a TLS server does (OPC 10000-6 §6.2.2): the subjectAltName must
carry the application URI the client announces (the connector announces the certificate's URI),
and should carry the gateway's DNS name (asyncua warns on every secure connection without one);
key usage must allow signing and encryption; the extended key usage names the role (clientAuth).
The certificate is self-signed (keyCertSign set, as the specification asks of self-signed
application certificates) and valid from an hour ago, so a server whose clock runs a little
behind the gateway's does not refuse it as not yet valid.

Why written here rather than taken from `asyncua.crypto.cert_gen`: that helper starts validity at
"now" (refused by a server whose clock is behind) and marks the certificate as a CA; the
`cryptography` calls below are the same ones it makes, with those two choices changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientCertificate", "add_arguments", "create_client_certificate", "run", "write_client_certificate"]

DEFAULT_DAYS = 1825  # five years: long enough not to surprise, short enough to be rotated
DEFAULT_KEY_SIZE = 2048  # Basic256Sha256 accepts 2048-4096 bit RSA keys
DEFAULT_ORGANIZATION = "facility-twin"
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey


def default_application_uri(hostname: str) -> str:
    return f"urn:facility-twin:agent:{hostname}"


def create_client_certificate(application_uri: str, dns_names: list[str], ip_addresses: list[str] | None = None,
                              common_name: str = "", organization: str = DEFAULT_ORGANIZATION,
                              days: int = DEFAULT_DAYS, key_size: int = DEFAULT_KEY_SIZE,
                              now: dt.datetime | None = None) -> ClientCertificate:
    """A self-signed OPC-UA client application certificate and its new RSA key."""
    if not application_uri or ":" not in application_uri:
        raise ValueError(f"application URI must be a URN or URL (e.g. urn:facility-twin:agent:gw01), "
                         f"got {application_uri!r}")
    if not dns_names:
        raise ValueError("give at least one DNS name of the gateway")
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"facility-twin agent {dns_names[0]}"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ])
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    names += [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ip_addresses or [])]
    start = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ClientCertificate(cert, key)


def write_client_certificate(pair: ClientCertificate, cert_path: Path, key_path: Path, force: bool = False) -> None:
    """Certificate as PEM (0644), key as unencrypted PKCS#8 PEM readable by the owner only (0600)."""
    for path in (cert_path, key_path):
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists; pass --force to replace it (the server must then trust "
                                  "the new certificate)")
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = pair.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    host = socket.gethostname()
    parser.description = ("Create the agent's OPC-UA client certificate and key (self-signed, for "
                          "Basic256Sha256). Trust the certificate on the server, then set certificate_file "
                          "and private_key_file in the opcua source.")
    parser.add_argument("--cert", type=Path, required=True, help="certificate to write (PEM), e.g. "
                        "/etc/twin-agent/opcua/client-cert.pem")
    parser.add_argument("--key", type=Path, required=True, help="private key to write (PEM, mode 0600)")
    parser.add_argument("--application-uri", default="",
                        help=f"the URI the agent announces (default {default_application_uri(host)})")
    parser.add_argument("--dns", action="append", default=[], metavar="NAME",
                        help=f"DNS name of the gateway, repeatable (default: {socket.getfqdn()} and {host})")
    parser.add_argument("--ip", action="append", default=[], metavar="ADDRESS",
                        help="static IP address of the gateway, repeatable (optional)")
    parser.add_argument("--common-name", default="", help="subject CN (default: facility-twin agent <dns name>)")
    parser.add_argument("--organization", default=DEFAULT_ORGANIZATION, help="subject O (who runs the agent)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
    parser.add_argument("--key-size", type=int, choices=(2048, 3072, 4096), default=DEFAULT_KEY_SIZE)
    parser.add_argument("--force", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    host = socket.gethostname()
    dns = args.dns or list(dict.fromkeys([socket.getfqdn(), host]))
    uri = args.application_uri or default_application_uri(host)
    try:
        pair = create_client_certificate(uri, dns, args.ip, args.common_name, args.organization, args.days,
                                         args.key_size)
        write_client_certificate(pair, args.cert, args.key, args.force)
    except (ValueError, OSError) as exc:
        print(f"opcua-cert: {exc}", file=sys.stderr)
        return 2
    cert = pair.certificate
    fingerprint = cert.fingerprint(hashes.SHA1()).hex(":").upper()
    print(f"wrote {args.cert} and {args.key}\n"
          f"  application URI: {uri}\n  DNS names: {', '.join(dns)}"
          + (f"\n  IP addresses: {', '.join(args.ip)}" if args.ip else "")
          + f"\n  valid until: {cert.not_valid_after_utc:%Y-%m-%d}\n  SHA-1 thumbprint: {fingerprint}\n"
          f"Next: trust {args.cert} on the OPC-UA server (its trusted-clients list), then set in the source:\n"
          f'  certificate_file = "{args.cert}"\n  private_key_file = "{args.key}"')
    return 0
