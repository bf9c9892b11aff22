"""BACnet/IP transport: the agent's BACpypes3 application, with BACpypes3's outcomes turned into ours.

This is the one module that imports BACpypes3. The agent is a BACnet device on one UDP address;
it sends Who-Is (unicast to a known address, so nothing is broadcast where it need not be),
ReadProperty, ReadPropertyMultiple and SubscribeCOV, and receives I-Am and COV notifications.
BACpypes3 answers a failed request with an APDU raised as an exception that is not an
`Exception` (ErrorRejectAbortNack derives from BaseException); every one leaves here as ours:

    DeviceSilent (ConnectError)   abort no-response: nothing answered after every APDU retry
    RequestRefused (SourceError)  reject / error / other abort: `reject: unrecognized-service`,
                                  `error: object unknown-object`, `abort: segmentation-not-supported`

Values come back as plain Python (floats, ints, bools, names, tuples), so the codec and the
connector never see a BACpypes3 type. COV subscriptions are renewed by the connector, not by
BACpypes3's timer, so that a renewal that fails is seen and acted on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bacpypes3.apdu import ErrorRejectAbortNack, IAmRequest
from bacpypes3.app import Application
from bacpypes3.basetypes import BinaryPV, Segmentation, ServicesSupported, StatusFlags
from bacpypes3.constructeddata import Array, List
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Boolean, Enumerated, ObjectIdentifier
from bacpypes3.service.cov import SubscriptionContextManager

from agent.connectors.bacnet.config import parse_address
from runtime.errors import ConnectError, SourceError

__all__ = [
    "Announcement",
    "BacnetLink",
    "DeviceSilent",
    "PropertyError",
    "RequestRefused",
    "Subscription",
    "plain",
]

VENDOR_ID = 999  # not a registered BACnet vendor: BACpypes3's id for applications without one
ObjectId = tuple[str, int]


class DeviceSilent(ConnectError):
    """No answer within the APDU timeout, after every retry."""


class RequestRefused(SourceError):
    """The device answered with an error, a reject or an abort."""


@dataclass(frozen=True, slots=True)
class PropertyError:
    """A property a device could not read (inside a ReadPropertyMultiple answer)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Announcement:
    """An I-Am: who a device is, where, and what it can take."""

    instance: int
    address: str
    max_apdu: int
    segmentation: str
    vendor_id: int


def plain(value: Any) -> Any:
    """A BACpypes3 value -> plain Python (the boundary: nothing past here sees a BACpypes3 type)."""
    if isinstance(value, ServicesSupported):
        return frozenset(name for name in str(value).split(";") if name)
    if isinstance(value, StatusFlags):
        bits = [bool(b) for b in value]
        return tuple((bits + [False] * 4)[:4])
    if isinstance(value, BinaryPV):
        return str(value) == "active"
    if isinstance(value, Boolean):
        return bool(value)
    if isinstance(value, Enumerated):
        return str(value)
    if isinstance(value, ObjectIdentifier):
        return (str(value[0]), int(value[1]))
    if isinstance(value, (Array, List, list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def _reason(exc: BaseException) -> str:
    kind = type(exc).__name__.removesuffix("PDU").lower()
    if kind == "error":
        cls, code = getattr(exc, "errorClass", None), getattr(exc, "errorCode", None)
        if cls is not None and code is not None:
            return f"error: {cls} {code}"
    return f"{kind}: {exc}"


def _failure(exc: BaseException) -> SourceError:
    text = str(exc)
    if text == "no-response" or "no-response" in text:
        return DeviceSilent("no response")
    return RequestRefused(_reason(exc))


class _AgentApplication(Application):
    """The agent's BACnet application; tells the connector about every I-Am it hears."""

    on_i_am: Callable[[Announcement], None] | None = None

    async def do_IAmRequest(self, apdu: IAmRequest) -> None:
        await super().do_IAmRequest(apdu)
        if self.on_i_am is not None:
            self.on_i_am(_announcement(apdu))


def _announcement(apdu: IAmRequest) -> Announcement:
    return Announcement(instance=int(apdu.iAmDeviceIdentifier[1]), address=str(apdu.pduSource),
                        max_apdu=int(apdu.maxAPDULengthAccepted), segmentation=str(apdu.segmentationSupported),
                        vendor_id=int(apdu.vendorID))


class _Renewable(SubscriptionContextManager):
    """BACpypes3's subscription, without its own renewal timer (the connector renews, and sees failures)."""

    def create_refresh_task(self) -> None:
        return None


class Subscription:
    """One COV subscription: `start`, `renew` before the lifetime ends, `next_change`, `abandon`."""

    def __init__(self, scm: _Renewable) -> None:
        self._scm = scm
        self.active = False

    async def start(self) -> None:
        try:
            await self._scm.__aenter__()
        except ErrorRejectAbortNack as exc:
            raise _failure(exc) from None
        self.active = True

    async def renew(self) -> None:
        try:
            await self._scm.refresh_subscription()
        except ErrorRejectAbortNack as exc:
            raise _failure(exc) from None

    async def next_change(self) -> dict[str, Any]:
        """The properties of the next notification (all values that arrived together), by name."""
        prop, value = await self._scm.get_value()
        change = {str(prop): plain(value)}
        while not self._scm.queue.empty():
            prop, value = await self._scm.get_value()
            change[str(prop)] = plain(value)
        return change

    async def abandon(self) -> None:
        """Forget the subscription here without telling the device (it lapses with its lifetime)."""
        if self.active:
            self.active = False
            await self._scm.__aexit__(ConnectError, ConnectError("abandoned"), None)


class BacnetLink:
    """The agent's BACnet/IP endpoint. Create and `open()` inside the event loop; `close()` at the end."""

    def __init__(self, local_address: str, device_instance: int, apdu_timeout_s: float, apdu_retries: int) -> None:
        interface, port = parse_address(local_address)
        self.address = f"{interface.ip}/{interface.network.prefixlen}:{port}"
        self.device_instance = device_instance
        self._apdu_timeout_ms = max(1, round(apdu_timeout_s * 1000))
        self._apdu_retries = apdu_retries
        self._app: _AgentApplication | None = None
        self._next_process_id = 1
        self.requests = 0
        self.on_i_am: Callable[[Announcement], None] | None = None

    def open(self) -> None:
        device = DeviceObject(
            objectIdentifier=("device", self.device_instance),
            objectName=f"facility-twin-agent-{self.device_instance}", vendorIdentifier=VENDOR_ID,
            apduTimeout=self._apdu_timeout_ms, numberOfApduRetries=self._apdu_retries,
            maxApduLengthAccepted=1476, segmentationSupported=Segmentation.segmentedBoth,
        )
        port = NetworkPortObject(self.address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1",
                                 networkNumber=0, networkNumberQuality="unknown")
        try:
            app = _AgentApplication.from_object_list([device, port])
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConnectError(f"cannot open BACnet/IP on {self.address}: {exc}") from None
        app.on_i_am = lambda a: self.on_i_am(a) if self.on_i_am is not None else None
        self._app = app

    @property
    def app(self) -> _AgentApplication:
        if self._app is None:
            raise ConnectError("the BACnet link is not open")
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    async def who_is(self, address: str | None, low: int | None = None, high: int | None = None,
                     timeout_s: float = 3.0) -> list[Announcement]:
        """Who-Is to `address` (unicast), or to the local broadcast address when None; the I-Ams heard."""
        destination = Address(address) if address else None
        if destination is None and self.address.split("/")[1].startswith("32:"):
            raise ConnectError("no broadcast address: local_address has no prefix")
        try:
            found = await self.app.who_is(low, high, destination, timeout=timeout_s)
        except ErrorRejectAbortNack as exc:
            raise _failure(exc) from None
        return [_announcement(apdu) for apdu in found or []]

    async def read(self, address: str, obj: ObjectId, prop: str) -> Any:
        self.requests += 1
        try:
            value = await self.app.read_property(Address(address), ObjectIdentifier(obj), prop)
        except ErrorRejectAbortNack as exc:
            raise _failure(exc) from None
        if isinstance(value, ErrorRejectAbortNack):
            raise _failure(value)
        return plain(value)

    async def read_multiple(self, address: str, objects: Sequence[ObjectId], props: Sequence[str]
                            ) -> dict[ObjectId, dict[str, Any]]:
        """One ReadPropertyMultiple: object -> property -> value or PropertyError."""
        parameters: list[Any] = []
        for obj in objects:
            parameters += [ObjectIdentifier(obj), list(props)]
        self.requests += 1
        try:
            results = await self.app.read_property_multiple(Address(address), parameters)
        except ErrorRejectAbortNack as exc:
            raise _failure(exc) from None
        if isinstance(results, ErrorRejectAbortNack):
            raise _failure(results)
        if results is None:
            raise RequestRefused("unexpected answer to ReadPropertyMultiple")
        out: dict[ObjectId, dict[str, Any]] = {obj: {} for obj in objects}
        for objid, prop, _index, value in results:
            key = (str(objid[0]), int(objid[1]))
            if value is None:
                out.setdefault(key, {})[str(prop)] = PropertyError("unsupported property type")
            elif hasattr(value, "errorClass"):
                out.setdefault(key, {})[str(prop)] = PropertyError(f"{value.errorClass} {value.errorCode}")
            else:
                out.setdefault(key, {})[str(prop)] = plain(value)
        return out

    def subscription(self, address: str, obj: ObjectId, lifetime_s: int, confirmed: bool) -> Subscription:
        process_id = self._next_process_id
        self._next_process_id = self._next_process_id % (1 << 22) + 1
        return Subscription(_Renewable(self.app, Address(address), ObjectIdentifier(obj), process_id, confirmed,
                                       lifetime_s))

