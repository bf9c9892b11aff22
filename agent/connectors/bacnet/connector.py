"""The BACnet connector: one BACnet/IP endpoint, one supervised task per device.

Connecting a device: Who-Is (unicast when its address is known) for its max APDU and
segmentation (falling back to reading them from its device object when it does not answer
Who-Is), its protocol-services-supported (does it do ReadPropertyMultiple, SubscribeCOV?), and
once per connection the units and state texts of its objects. Objects then either get a COV
subscription (mode auto where the device supports COV, or cov) that the connector renews at
half its lifetime, or are polled with ReadPropertyMultiple in requests sized to the device's
APDU. A device with only COV objects still gets a cheap read per poll interval, so silence is
noticed; every failure marks its points BAD with the reason, drops the subscriptions and retries
with backoff; coming back resubscribes. An I-Am from a connected device (it restarted and
announced itself) makes the connector subscribe again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.connectors.bacnet.codec import (
    POLLED_PROPERTIES,
    ObjectState,
    decode_value,
    objects_per_request,
    quality_of,
    split,
    unit_symbol,
)
from agent.connectors.bacnet.config import BacnetDevice, BacnetPoint, BacnetSourceConfig, parse_address, parse_source
from agent.connectors.bacnet.link import (
    Announcement,
    BacnetLink,
    DeviceSilent,
    ObjectId,
    PropertyError,
    RequestRefused,
    Subscription,
)
from agent.connectors.base import ConnectorStats, Emit, SpecListener
from agent.connectors.health import PeerHealth
from agent.connectors.periodic import first_due
from agent.model import PointSpec, Quality, Reading, now_ns
from runtime.cancellation import cancel_and_wait, raise_if_cancelling
from runtime.errors import DecodeError, SourceError
from runtime.logs import RateLimitedLog

__all__ = ["BacnetConnector", "build"]

log = logging.getLogger("twin.agent.bacnet")

LOG_EVERY_S = 60.0
SIZE_ABORTS = ("segmentation-not-supported", "buffer-overflow", "apdu-too-long", "window-size-out-of-range")


@dataclass(slots=True)
class _Point:
    config: BacnetPoint
    object_id: ObjectId
    spec: PointSpec


@dataclass(slots=True)
class _Device:
    """Connection state of one BACnet device."""

    config: BacnetDevice
    health: PeerHealth
    objects: dict[ObjectId, list[_Point]]
    address: str | None = None
    connected: bool = False
    discovering: bool = False
    ever_connected: bool = False
    announcement: Announcement | None = None
    rpm: bool = True
    cov: bool = False
    per_request: int = 1
    state_text: dict[ObjectId, list[str]] = field(default_factory=dict)
    poll_objects: list[ObjectId] = field(default_factory=list)
    subscriptions: dict[ObjectId, Subscription] = field(default_factory=dict)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)
    renew_at: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    resubscribe: bool = False

    @property
    def label(self) -> str:
        return self.config.label


class BacnetConnector:
    """Reads the points of one `[[sources]] type = "bacnet"` table; see the package README."""

    def __init__(self, config: BacnetSourceConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.name = config.name
        self.stats = ConnectorStats()
        self.spec_listener: SpecListener | None = None
        self._rng = rng or random.Random()
        self._rate_log = RateLimitedLog(log, LOG_EVERY_S)
        self._points = [
            _Point(p, p.object_id, PointSpec(asset=p.asset, name=p.name, unit=p.unit, kind=p.point_kind,
                                             deadband=p.deadband, expected_interval_s=config.poll_interval_s))
            for p in config.points
        ]
        self._link: BacnetLink | None = None
        self._devices: dict[int, _Device] = {}
        self.cov_notifications = 0

    # -- the Connector protocol ------------------------------------------------------------------

    def points(self) -> Sequence[PointSpec]:
        return tuple(p.spec for p in self._points)

    async def run(self, emit: Emit) -> None:
        """Read every device until cancelled."""
        link = self._open()
        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self._devices.values():
                    tasks.create_task(self._device_loop(link, device, emit), name=f"{self.name}/{device.label}")
        finally:
            await self._close()

    # -- extras ----------------------------------------------------------------------------------

    async def read_once(self, cycles: int = 1) -> list[Reading]:
        """Connect every device and poll every point `cycles` times (no COV): for diagnostics and benchmarks."""
        link = self._open(poll_only=True)
        out: list[Reading] = []
        try:
            for device in self._devices.values():
                await self._connect(link, device, out.extend)
                for _ in range(cycles):
                    await self._poll(link, device, out.extend)
        finally:
            await self._close()
        return out

    @property
    def requests_sent(self) -> int:
        return self._link.requests if self._link is not None else 0

    # -- lifecycle -------------------------------------------------------------------------------

    def _open(self, poll_only: bool = False) -> BacnetLink:
        c = self.config
        link = BacnetLink(c.local_address, c.device_instance, c.apdu_timeout_s, c.apdu_retries)
        link.open()
        link.on_i_am = self._heard
        self._link = link
        self._devices = {}
        for d in c.devices:
            objects: dict[ObjectId, list[_Point]] = {}
            for p in self._points:
                if p.config.device == d.instance:
                    objects.setdefault(p.object_id, []).append(p)
            config = d.model_copy(update={"mode": "poll"}) if poll_only else d
            health = PeerHealth(self.name, d.label, self.stats, log, c.poll_interval_s, c.backoff_max_s, self._rng)
            self._devices[d.instance] = _Device(config, health, objects)
        return link

    async def _close(self) -> None:
        for device in self._devices.values():
            await self._disconnect(device)
        if self._link is not None:
            self._link.close()

    def _heard(self, announcement: Announcement) -> None:
        """An I-Am: a connected device announcing itself again has restarted and lost its subscriptions."""
        device = self._devices.get(announcement.instance)
        if device is not None and device.connected and not device.discovering:
            log.info("%s/%s: I-Am from %s: subscribing again", self.name, device.label, announcement.address)
            device.resubscribe = True
            device.wake.set()

    # -- the device loop -------------------------------------------------------------------------

    async def _device_loop(self, link: BacnetLink, device: _Device, emit: Emit) -> None:
        due = first_due(self._rng, self.config.poll_interval_s)  # the first requests spread, by at most 1 s
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        while True:
            raise_if_cancelling()
            delay = self.config.poll_interval_s
            try:
                if not device.connected:
                    await self._connect(link, device, emit)
                if device.resubscribe or (device.subscriptions and time.monotonic() >= device.renew_at):
                    await self._renew(device)
                if time.monotonic() >= due:
                    await self._poll(link, device, emit)
                    due = max(due + delay, time.monotonic())
            except SourceError as exc:  # silent, or refusing what every connection needs
                delay = device.health.failed(str(exc))
                await self._disconnect(device)
                emit(self._bad([p for ps in device.objects.values() for p in ps], str(exc)))
                due = time.monotonic() + delay
            except Exception:  # a bug or a surprise: count it, log it now and then, keep going
                self.stats.errors += 1
                if self._rate_log.warning(f"crash:{device.label}", f"{self.name}/{device.label}: cycle failed"):
                    log.exception("%s/%s: cycle failed", self.name, device.label)
                due = time.monotonic() + delay
            wake_at = min(due, device.renew_at) if device.subscriptions else due
            device.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(device.wake.wait(), max(0.0, wake_at - time.monotonic()))

    async def _connect(self, link: BacnetLink, device: _Device, emit: Emit) -> None:
        inst = device.config.instance
        device.discovering = True
        try:
            announcement = await self._discover(link, device)
            device.announcement, device.address = announcement, announcement.address
            device.per_request = objects_per_request(announcement.max_apdu, announcement.segmentation,
                                                     device.config.max_objects_per_request)
            services = await link.read(announcement.address, ("device", inst), "protocol-services-supported")
            device.rpm = "read-property-multiple" in services
            device.cov = "subscribe-cov" in services
            await self._read_metadata(link, device, emit)
            await self._subscribe(link, device)
        finally:
            device.discovering = False
        device.connected = True
        if device.ever_connected:
            self.stats.reconnects += 1
        device.ever_connected = True
        device.health.answered()
        log.info("%s/%s: device %d at %s, max APDU %d, %s, %s, %d object(s) by COV, %d polled", self.name,
                 device.label, inst, device.address, announcement.max_apdu, announcement.segmentation,
                 "ReadPropertyMultiple" if device.rpm else "ReadProperty only", len(device.subscriptions),
                 len(device.poll_objects))

    async def _discover(self, link: BacnetLink, device: _Device) -> Announcement:
        inst, configured = device.config.instance, device.config.address
        address = None
        if configured is not None:
            interface, port = parse_address(configured)
            address = f"{interface.ip}:{port}"
        heard = [a for a in await link.who_is(address, inst, inst, self.config.discovery_timeout_s)
                 if a.instance == inst]
        if heard:
            return heard[0]
        if address is None:
            raise DeviceSilent(f"no I-Am from device {inst} (broadcast Who-Is)")
        # Some devices do not answer a unicast Who-Is: their device object says the same.
        props = await link.read_multiple(address, [("device", inst)], ["max-apdu-length-accepted",
                                                                       "segmentation-supported", "vendor-identifier"])
        values = props.get(("device", inst), {})
        if any(isinstance(v, PropertyError) for v in values.values()) or len(values) < 3:
            raise RequestRefused(f"device {inst} at {address}: its device object lacks max-apdu-length-accepted")
        return Announcement(inst, address, int(values["max-apdu-length-accepted"]),
                            str(values["segmentation-supported"]), int(values["vendor-identifier"]))

    async def _read_metadata(self, link: BacnetLink, device: _Device, emit: Emit) -> None:
        """Units (for points without a configured unit) and state texts, once per connection."""
        assert device.address is not None
        for obj, points in device.objects.items():
            wanted = ["units"] if obj[0].startswith("analog") else ["state-text"] if obj[0].startswith("multi") else []
            if not wanted:
                continue
            try:
                props = (await link.read_multiple(device.address, [obj], wanted))[obj] if device.rpm else {
                    wanted[0]: await link.read(device.address, obj, wanted[0])}
            except RequestRefused as exc:
                emit(self._bad(points, f"{obj[0]},{obj[1]}: {exc}"))
                continue
            texts = props.get("state-text")
            if isinstance(texts, list):
                device.state_text[obj] = [str(t) for t in texts]
            units = props.get("units")
            if isinstance(units, str):
                self._learn_unit(points, unit_symbol(units))

    def _learn_unit(self, points: list[_Point], unit: str) -> None:
        for p in points:
            if p.config.unit:
                if p.config.unit != unit:
                    self._rate_log.warning(f"unit:{p.spec.asset}/{p.spec.name}",
                                           f"{self.name}: {p.spec.asset}/{p.spec.name}: configured unit "
                                           f"{p.config.unit!r}, but the device says {unit!r}")
                continue
            if p.spec.unit != unit:
                p.spec = replace(p.spec, unit=unit)
                if self.spec_listener is not None:
                    self.spec_listener(p.spec)

    async def _subscribe(self, link: BacnetLink, device: _Device) -> None:
        assert device.address is not None
        device.poll_objects = []
        for obj, points in device.objects.items():
            mode = self.config.mode_of(points[0].config) if device.config.mode != "poll" else "poll"
            if mode == "poll" or not device.cov:
                if mode == "cov" and not device.cov:
                    self._rate_log.warning(f"nocov:{device.label}", f"{self.name}/{device.label}: mode = \"cov\" "
                                           "but the device does not support SubscribeCOV: polling instead")
                device.poll_objects.append(obj)
                continue
            subscription = link.subscription(device.address, obj, self.config.cov_lifetime_s, self.config.cov_confirmed)
            try:
                await subscription.start()
            except RequestRefused as exc:
                self._rate_log.warning(f"cov:{device.label}:{obj}", f"{self.name}/{device.label}: COV on "
                                       f"{obj[0]},{obj[1]} refused ({exc}): polling it instead")
                device.poll_objects.append(obj)
                continue
            device.subscriptions[obj] = subscription
        device.renew_at = time.monotonic() + self.config.cov_lifetime_s / 2

    async def _renew(self, device: _Device) -> None:
        device.resubscribe = False
        for obj, subscription in list(device.subscriptions.items()):
            try:
                await subscription.renew()
            except RequestRefused as exc:
                self._rate_log.warning(f"renew:{device.label}:{obj}", f"{self.name}/{device.label}: renewing COV "
                                       f"on {obj[0]},{obj[1]} refused ({exc}): polling it instead")
                await subscription.abandon()
                del device.subscriptions[obj]
                device.poll_objects.append(obj)
        device.renew_at = time.monotonic() + self.config.cov_lifetime_s / 2

    async def _disconnect(self, device: _Device) -> None:
        watchers, device.watchers = device.watchers, []
        await cancel_and_wait(watchers)
        for subscription in device.subscriptions.values():
            await subscription.abandon()
        device.subscriptions = {}
        device.connected = False

    # -- reading ---------------------------------------------------------------------------------

    async def _poll(self, link: BacnetLink, device: _Device, emit: Emit) -> None:
        assert device.address is not None
        if device.subscriptions and not device.watchers:
            device.watchers = [asyncio.create_task(self._watch(link, device, obj, s, emit))
                               for obj, s in device.subscriptions.items()]
        if not device.poll_objects:  # COV only: one cheap read, so a silent device is noticed
            await link.read(device.address, ("device", device.config.instance), "system-status")
        for batch in split(device.poll_objects, device.per_request):
            try:
                results = await self._read_batch(link, device, batch)
            except RequestRefused as exc:
                if any(reason in str(exc) for reason in SIZE_ABORTS) and device.per_request > 1:
                    device.per_request = max(1, device.per_request // 2)
                    log.info("%s/%s: %s: asking %d object(s) per request from now on", self.name, device.label, exc,
                             device.per_request)
                self._count(device, str(exc))
                emit(self._bad([p for obj in batch for p in device.objects[obj]], str(exc)))
                continue
            arrived = now_ns()
            for obj in batch:
                emit(self._readings(device, obj, results.get(obj, {}), arrived))
        self.stats.polls += 1

    async def _read_batch(self, link: BacnetLink, device: _Device, batch: list[ObjectId]
                          ) -> dict[ObjectId, dict[str, Any]]:
        assert device.address is not None
        if device.rpm:
            return await link.read_multiple(device.address, batch, POLLED_PROPERTIES)
        out: dict[ObjectId, dict[str, Any]] = {}
        for obj in batch:
            out[obj] = {}
            for prop in POLLED_PROPERTIES:
                try:
                    out[obj][prop] = await link.read(device.address, obj, prop)
                except RequestRefused as exc:
                    out[obj][prop] = PropertyError(str(exc))
        return out

    async def _watch(self, link: BacnetLink, device: _Device, obj: ObjectId, subscription: Subscription,
                     emit: Emit) -> None:
        """Turn the COV notifications of one subscription into readings."""
        last: dict[str, Any] = {}
        while True:
            change = await subscription.next_change()
            self.cov_notifications += 1
            last.update(change)
            props = dict(last)
            flags = props.get("status-flags")
            if isinstance(flags, tuple) and flags[1] and device.address is not None:
                try:  # a fault: the reliability property says which
                    props["reliability"] = await link.read(device.address, obj, "reliability")
                except SourceError:
                    props["reliability"] = None
            emit(self._readings(device, obj, props, now_ns()))

    def _readings(self, device: _Device, obj: ObjectId, props: dict[str, Any], arrived: int) -> list[Reading]:
        points = device.objects[obj]
        pv = props.get("present-value")
        if isinstance(pv, PropertyError):
            return self._bad(points, f"{obj[0]},{obj[1]}: {pv.reason}", arrived)

        def ok(name: str) -> Any:
            value = props.get(name)
            return None if isinstance(value, PropertyError) else value

        state = ObjectState(pv, ok("status-flags"), ok("out-of-service"), ok("reliability"))
        quality, reason = quality_of(state)
        out = []
        for p in points:
            if quality is Quality.BAD:
                out.append(Reading(p.spec.asset, p.spec.name, None, arrived, quality, reason))
                continue
            try:
                value = decode_value(obj[0], pv, device.state_text.get(obj, ()), p.config.scale, p.config.offset)
            except DecodeError as exc:
                self.stats.decode_errors += 1
                self._rate_log.warning(f"decode:{p.spec.asset}/{p.spec.name}",
                                       f"{self.name}: {p.spec.asset}/{p.spec.name}: decode error: {exc}")
                out.append(Reading(p.spec.asset, p.spec.name, None, arrived, Quality.BAD, f"decode error: {exc}"))
                continue
            out.append(Reading(p.spec.asset, p.spec.name, value, arrived, quality, reason))
        return out

    def _count(self, device: _Device, reason: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{device.label}: {reason}"
        self._rate_log.warning(f"refused:{device.label}:{reason}", f"{self.name}/{device.label}: {reason}")

    @staticmethod
    def _bad(points: Sequence[_Point], reason: str, ts_ns: int | None = None) -> list[Reading]:
        ts = now_ns() if ts_ns is None else ts_ns
        return [Reading(p.spec.asset, p.spec.name, None, ts, Quality.BAD, reason) for p in points]


def build(table: dict[str, Any], key: str) -> BacnetConnector:
    """Registry entry point: a validated `[[sources]]` table (without `type`) -> connector."""
    return BacnetConnector(parse_source(table, key))
