"""`twin-agent probe bacnet`: find BACnet devices (Who-Is / I-Am) and list their objects, without a vendor tool.

For every device that answers: its address, max APDU, segmentation, vendor and whether it
supports COV; then every analog, binary and multi-state object with its name, present value,
units or state texts and status, followed by `[[sources.points]]` lines ready to paste. Give
`--address` to ask one device by unicast (nothing is broadcast); without it the Who-Is goes to the
broadcast address of `--local-address` (which then needs its prefix, e.g. 192.0.2.10/24).

    twin-agent probe bacnet --local-address 192.0.2.10/24
    twin-agent probe bacnet --local-address 127.0.0.1:47900 --address 127.0.0.1:47901
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.connectors.bacnet.codec import ObjectState, decode_value, quality_of, unit_symbol
from agent.connectors.bacnet.config import OBJECT_TYPES, parse_address
from agent.connectors.bacnet.link import Announcement, BacnetLink, ObjectId, PropertyError
from runtime.errors import DecodeError, SourceError

__all__ = ["ObjectInfo", "add_arguments", "describe", "run"]

PROPERTIES = ("object-name", "present-value", "status-flags", "out-of-service", "reliability")
PROBE_INSTANCE = 4194301  # the probe's own device instance (the agent's default is 4194300)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    object_id: ObjectId
    properties: dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local-address", required=True,
                        help="this machine's BACnet/IP address, ip[/prefix][:port] (e.g. 192.0.2.10/24)")
    parser.add_argument("--address", help="ask only the device at ip[:port] (unicast Who-Is)")
    parser.add_argument("--instance", type=int, help="only this device instance")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for I-Am and for each answer")
    parser.add_argument("--device-instance", type=int, default=PROBE_INSTANCE,
                        help=f"the probe's own device instance (default {PROBE_INSTANCE})")


def _value_text(obj: ObjectId, props: dict[str, Any]) -> str:
    texts = props.get("state-text")
    try:
        value = decode_value(obj[0], props.get("present-value"), texts if isinstance(texts, list) else ())
    except DecodeError as exc:
        return f"<{exc}>"
    units = props.get("units")
    return f"{value:g} {unit_symbol(units)}".rstrip() if isinstance(value, float) and isinstance(units, str) \
        else str(value)


def describe(device: Announcement, services: frozenset[str], objects: Sequence[ObjectInfo]) -> str:
    """The report for one device (pure; tested)."""
    cov = "yes" if "subscribe-cov" in services else "no (points will be polled)"
    rpm = "yes" if "read-property-multiple" in services else "no (one ReadProperty per property)"
    lines = [f"device {device.instance} at {device.address}: max APDU {device.max_apdu}, {device.segmentation}, "
             f"vendor {device.vendor_id}",
             f"  COV: {cov}; ReadPropertyMultiple: {rpm}",
             f"  {'object':<22} {'name':<24} {'value':<18} status"]
    snippet = []
    for info in objects:
        obj, props = info.object_id, info.properties
        name = props.get("object-name")
        name = name if isinstance(name, str) else "?"
        if isinstance(props.get("present-value"), PropertyError):
            lines.append(f"  {obj[0]},{obj[1]:<{21 - len(obj[0])}} {name:<24} {props['present-value'].reason}")
            continue
        flags = props.get("status-flags")
        state = ObjectState(props.get("present-value"), flags if isinstance(flags, tuple) else None,
                            props.get("out-of-service") if isinstance(props.get("out-of-service"), bool) else None,
                            props.get("reliability") if isinstance(props.get("reliability"), str) else None)
        quality, reason = quality_of(state)
        status = quality.name + (f" ({reason})" if reason else "")
        lines.append(f"  {obj[0] + ',' + str(obj[1]):<22} {name:<24} {_value_text(obj, props):<18} {status}")
        unit = unit_symbol(props["units"]) if isinstance(props.get("units"), str) else ""
        point = name.replace("-", "_").replace(" ", "_").lower()
        snippet.append(f'{{ asset = "ASSET", name = "{point}", device = {device.instance}, '
                       f'object = "{OBJECT_TYPES[obj[0]]}:{obj[1]}"' + (f', unit = "{unit}"' if unit else "") + " }")
    if snippet:
        lines += ["", "  # the points, for the [[sources]] table (set each asset):", "  points = ["]
        lines += [f"    {s}," for s in snippet]
        lines.append("  ]")
    return "\n".join(lines)


async def _probe(args: argparse.Namespace) -> list[str]:
    link = BacnetLink(args.local_address, args.device_instance, args.timeout, 1)
    link.open()
    reports = []
    try:
        address = None
        if args.address:
            interface, port = parse_address(args.address)
            address = f"{interface.ip}:{port}"
        low = high = args.instance
        devices = await link.who_is(address, low, high, args.timeout)
        if not devices:
            raise SourceError("no I-Am: no device answered the Who-Is" + (f" at {address}" if address else ""))
        for device in devices:
            inst = device.instance
            services = await link.read(device.address, ("device", inst), "protocol-services-supported")
            object_list = await link.read(device.address, ("device", inst), "object-list")
            objects = []
            for obj in object_list:
                if obj[0] not in OBJECT_TYPES:
                    continue
                extra = ["units"] if obj[0].startswith("analog") else ["state-text"] if obj[0].startswith(
                    "multi") else []
                props = (await link.read_multiple(device.address, [obj], [*PROPERTIES, *extra]))[obj]
                objects.append(ObjectInfo(obj, props))
            reports.append(describe(device, services, objects))
    finally:
        link.close()
    return reports


def run(args: argparse.Namespace) -> int:
    """Probe once; 0 when a device answered, 1 when none did, 2 on usage."""
    try:
        parse_address(args.local_address)
    except ValueError as exc:
        print(f"--local-address: {exc}", file=sys.stderr)
        return 2
    print(f"BACnet probe from {args.local_address}" + (f" to {args.address}" if args.address else " (broadcast)"))
    try:
        reports = asyncio.run(_probe(args))
    except (SourceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n\n".join(reports))
    return 0
