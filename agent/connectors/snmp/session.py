"""SNMP transport: GET and GETBULK walks against one agent, with pysnmp's outcomes turned into ours.

This is the one module that imports pysnmp. Requests go out through the connector's single
asyncio SnmpEngine (one UDP socket, many agents), each under the device's timeout and retries.
Every failure leaves as one of our errors whose message is the reason an operator reads:

    AgentSilent (ConnectError)    no answer: `timeout after 1 s x 2 attempts`
    AgentRefused (ConnectError)   v3 security: `authentication failed (wrong auth key or protocol)`,
                                  `unknown user`, `decryption failed (wrong priv key or protocol)`
    RequestFailed (SourceError)   the agent answered with an error-status (`tooBig at ...`, `genErr`)

Values come back as `SnmpValue` (codec.py), so the codec never sees a pyasn1 object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
)
from pysnmp.proto import errind

from agent.connectors.snmp.codec import SnmpValue
from agent.connectors.snmp.config import Credentials
from runtime.errors import ConnectError, SourceError

__all__ = ["AgentRefused", "AgentSilent", "Oid", "RequestFailed", "SnmpSession", "new_engine"]

Oid = tuple[int, ...]
MAX_WALK_REQUESTS = 1000  # a table of more rows than this x max_repetitions is cut (and logged)

AUTH = {"MD5": usmHMACMD5AuthProtocol, "SHA": usmHMACSHAAuthProtocol, "SHA224": usmHMAC128SHA224AuthProtocol,
        "SHA256": usmHMAC192SHA256AuthProtocol, "SHA384": usmHMAC256SHA384AuthProtocol,
        "SHA512": usmHMAC384SHA512AuthProtocol}
PRIV = {"DES": usmDESPrivProtocol, "AES": usmAesCfb128Protocol, "AES192": usmAesCfb192Protocol,
        "AES256": usmAesCfb256Protocol}
SECURITY_REASONS: dict[type, str] = {
    errind.WrongDigest: "authentication failed (wrong auth key or protocol)",
    errind.UnknownUserName: "unknown user",
    errind.DecryptionError: "decryption failed (wrong priv key or protocol)",
    errind.UnsupportedSecurityLevel: "the agent does not support authPriv for this user",
    errind.UnknownEngineID: "unknown engine id",
}
ABSENT_CLASSES = {"NoSuchObject": "noSuchObject", "NoSuchInstance": "noSuchInstance", "EndOfMibView": "endOfMibView"}


class AgentSilent(ConnectError):
    """No answer within the timeout, after every retry."""


class AgentRefused(ConnectError):
    """The agent answered with a security failure: it is there, but we cannot read it."""


class RequestFailed(SourceError):
    """The agent answered with an error-status for the request."""


def new_engine() -> SnmpEngine:
    return SnmpEngine()


def to_value(value: Any) -> SnmpValue:
    """pyasn1/pysnmp value -> SnmpValue (the boundary: nothing past here sees pyasn1)."""
    name = type(value).__name__
    if name in ABSENT_CLASSES:
        return SnmpValue(ABSENT_CLASSES[name])
    if name in ("OctetString", "Opaque", "Bits"):
        return SnmpValue("Opaque" if name == "Opaque" else "OctetString", bytes(value.asOctets()))
    if name == "IpAddress":
        return SnmpValue("IpAddress", bytes(value.asOctets()))
    if name in ("ObjectIdentifier", "ObjectName"):
        return SnmpValue("ObjectIdentifier", tuple(value))
    if name == "Null":
        return SnmpValue("Null")
    return SnmpValue("Integer32" if name == "Integer" else name, int(value))


class SnmpSession:
    """Requests to one agent. `open()` resolves the address; then `get` and `walk` as often as needed."""

    def __init__(self, engine: SnmpEngine, host: str, port: int, credentials: Credentials, timeout_s: float,
                 retries: int, local_address: str | None = None) -> None:
        self.endpoint = f"{host}:{port}"
        self._engine, self._host, self._port = engine, host, port
        self._timeout_s, self._retries, self._local = timeout_s, retries, local_address
        self._target: UdpTransportTarget | None = None
        self._context = ContextData(contextName=credentials.context.encode()) if credentials.context else ContextData()
        if credentials.version == "2c":
            self._auth: CommunityData | UsmUserData = CommunityData(credentials.community, mpModel=1)
        else:
            self._auth = UsmUserData(credentials.user, credentials.auth_key, credentials.priv_key,
                                     authProtocol=AUTH[credentials.auth_protocol],
                                     privProtocol=PRIV[credentials.priv_protocol])
        self.requests = 0

    async def _transport(self) -> UdpTransportTarget:
        if self._target is None:
            try:
                target = await UdpTransportTarget.create((self._host, self._port), timeout=self._timeout_s,
                                                         retries=self._retries)
            except PySnmpError as exc:
                raise ConnectError(f"cannot resolve {self._host}: {exc}") from None
            if self._local:
                target.set_local_address((self._local, 0))
            self._target = target
        return self._target

    def _check(self, error_indication: Any, error_status: Any, error_index: Any, oids: Sequence[Oid]) -> None:
        if error_indication:
            if isinstance(error_indication, errind.RequestTimedOut):
                raise AgentSilent(f"timeout after {self._timeout_s:g} s x {self._retries + 1} attempt"
                                  f"{'s' if self._retries else ''}")
            reason = SECURITY_REASONS.get(type(error_indication))
            if reason is not None:
                raise AgentRefused(reason)
            raise AgentSilent(str(error_indication))
        if error_status and int(error_status) != 0:
            where = ""
            if error_index and 0 < int(error_index) <= len(oids):
                where = f" at {'.'.join(map(str, oids[int(error_index) - 1]))}"
            status = error_status.prettyPrint() if hasattr(error_status, "prettyPrint") else str(error_status)
            raise RequestFailed(f"{status}{where}")

    async def get(self, oids: Sequence[Oid]) -> list[SnmpValue]:
        """GET `oids` in one request; values in the same order."""
        target = await self._transport()
        self.requests += 1
        try:
            ei, es, ix, var_binds = await get_cmd(self._engine, self._auth, target, self._context,
                                                  *(ObjectType(ObjectIdentity(o)) for o in oids), lookupMib=False)
        except PySnmpError as exc:
            raise AgentSilent(f"{type(exc).__name__}: {exc}") from None
        self._check(ei, es, ix, oids)
        if len(var_binds) != len(oids):
            raise RequestFailed(f"{len(var_binds)} values for {len(oids)} OIDs")
        return [to_value(v) for _, v in var_binds]

    async def walk(self, columns: Sequence[Oid], max_repetitions: int) -> dict[Oid, dict[Oid, SnmpValue]]:
        """GETBULK walk of table columns together: column -> {row index -> value}."""
        target = await self._transport()
        rows: dict[Oid, dict[Oid, SnmpValue]] = {c: {} for c in columns}
        cursor = {c: c for c in columns}
        for _ in range(MAX_WALK_REQUESTS):
            active = [c for c in columns if c in cursor]
            if not active:
                return rows
            self.requests += 1
            try:
                ei, es, ix, var_binds = await bulk_cmd(self._engine, self._auth, target, self._context, 0,
                                                       max_repetitions, *(ObjectType(ObjectIdentity(cursor[c]))
                                                                          for c in active), lookupMib=False)
            except PySnmpError as exc:
                raise AgentSilent(f"{type(exc).__name__}: {exc}") from None
            self._check(ei, es, ix, [cursor[c] for c in active])
            if not var_binds:
                return rows
            done: set[Oid] = set()
            for n, (name, value) in enumerate(var_binds):
                column = active[n % len(active)]
                if column in done:
                    continue
                oid = tuple(name)
                v = to_value(value)
                if v.syntax == "endOfMibView" or oid[: len(column)] != column or oid <= cursor[column]:
                    done.add(column)
                    continue
                rows[column][oid[len(column):]] = v
                cursor[column] = oid
            for column in done:
                cursor.pop(column, None)
        raise RequestFailed(f"table walk stopped after {MAX_WALK_REQUESTS} requests")
