"""A BACnet/IP air-handling-unit controller served by BACpypes3 on one UDP address (a loopback one in tests).

Objects (instance numbers as a BMS integrator would find them with `twin-agent probe bacnet`):

    analog-input,1     supply-air-temp     °C, steps through 13.0 .. 17.5 every --step-s (COV increment 0.2)
    analog-input,2     return-air-temp     °C, 24.0
    analog-input,3     filter-dp           Pa, 120.0
    analog-output,1    cooling-valve       %, 35.0
    analog-value,1     supply-temp-sp      °C, 13.0
    binary-input,1     filter-alarm        inactive
    binary-output,1    supply-fan-cmd      active
    binary-value,1     occupied            active
    multi-state-input,1  fan-speed-fb      2 of (low, medium, high)
    multi-state-output,1 damper-mode       1 of (closed, minimum, economizer)
    multi-state-value,1  operating-mode    3 of (off, heating, cooling, economizer)

`--no-cov` makes a controller without change-of-value: SubscribeCOV is not in its
protocol-services-supported and is rejected (unrecognized-service). `--max-apdu` and
`--no-segmentation` make a small device whose reads must be split. `--faults FILE` is polled
every 0.2 s: a JSON object mapping "type,instance" to {"reliability": "...", "out_of_service": bool,
"value": number} lets a test put a sensor into fault or out of service.

    python -m simulator.bacnet_ahu --address 127.0.0.1:47809 --instance 1001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

from bacpypes3.app import Application
from bacpypes3.basetypes import EngineeringUnits, Reliability, Segmentation, ServicesSupported, StatusFlags
from bacpypes3.errors import UnrecognizedService
from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject, BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateInputObject, MultiStateOutputObject, MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject

__all__ = ["AHU_OBJECTS", "SUPPLY_SEQUENCE", "build_application", "main"]

log = logging.getLogger("twin.sim.bacnet")

VENDOR_ID = 999  # BACpypes3's id for sample applications
SUPPLY_SEQUENCE = tuple(13.0 + 0.5 * n for n in range(10))
FAULT_POLL_S = 0.2

AHU_OBJECTS: dict[str, dict[str, Any]] = {
    "analog-input,1": {"name": "supply-air-temp", "value": SUPPLY_SEQUENCE[0], "units": "degreesCelsius"},
    "analog-input,2": {"name": "return-air-temp", "value": 24.0, "units": "degreesCelsius"},
    "analog-input,3": {"name": "filter-dp", "value": 120.0, "units": "pascals"},
    "analog-output,1": {"name": "cooling-valve", "value": 35.0, "units": "percent"},
    "analog-value,1": {"name": "supply-temp-sp", "value": 13.0, "units": "degreesCelsius"},
    "binary-input,1": {"name": "filter-alarm", "value": "inactive"},
    "binary-output,1": {"name": "supply-fan-cmd", "value": "active"},
    "binary-value,1": {"name": "occupied", "value": "active"},
    "multi-state-input,1": {"name": "fan-speed-fb", "value": 2, "states": ["low", "medium", "high"]},
    "multi-state-output,1": {"name": "damper-mode", "value": 1, "states": ["closed", "minimum", "economizer"]},
    "multi-state-value,1": {"name": "operating-mode", "value": 3,
                            "states": ["off", "heating", "cooling", "economizer"]},
}
CLASSES = {
    "analog-input": AnalogInputObject, "analog-output": AnalogOutputObject, "analog-value": AnalogValueObject,
    "binary-input": BinaryInputObject, "binary-output": BinaryOutputObject, "binary-value": BinaryValueObject,
    "multi-state-input": MultiStateInputObject, "multi-state-output": MultiStateOutputObject,
    "multi-state-value": MultiStateValueObject,
}


class NoCovApplication(Application):
    """A controller without change-of-value services (many older or cheaper ones)."""

    def get_services_supported(self) -> ServicesSupported:
        supported = super().get_services_supported()
        supported[ServicesSupported.subscribeCOV] = 0
        supported[ServicesSupported.subscribeCOVProperty] = 0
        return supported

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        raise UnrecognizedService("no change-of-value services")


def _object(objid: str, spec: dict[str, Any]) -> Any:
    kind, _, instance = objid.partition(",")
    args: dict[str, Any] = {
        "objectIdentifier": (kind, int(instance)), "objectName": spec["name"], "presentValue": spec["value"],
        "statusFlags": StatusFlags([0, 0, 0, 0]), "outOfService": False, "reliability": Reliability.noFaultDetected,
        "eventState": "normal",
    }
    if kind.startswith("analog"):
        args.update(units=EngineeringUnits(spec["units"]), covIncrement=0.2)
    if kind.startswith("multi-state"):
        args.update(numberOfStates=len(spec["states"]), stateText=spec["states"])
    if kind.startswith("binary"):
        args.update(activeText="on", inactiveText="off")
    if kind in ("binary-input", "binary-output"):
        args.update(polarity="normal")
    return CLASSES[kind](**args)


def build_application(address: str, instance: int, cov: bool = True, max_apdu: int = 1476,
                      segmentation: bool = True, extra_analog: int = 0) -> tuple[Application, dict[str, Any]]:
    device = DeviceObject(
        objectIdentifier=("device", instance), objectName=f"ahu-controller-{instance}", vendorIdentifier=VENDOR_ID,
        maxApduLengthAccepted=max_apdu,
        segmentationSupported=Segmentation.segmentedBoth if segmentation else Segmentation.noSegmentation,
    )
    port = NetworkPortObject(address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1",
                             networkNumber=0, networkNumberQuality="unknown")
    specs = dict(AHU_OBJECTS)
    for n in range(extra_analog):  # more sensors, for benchmarks
        specs[f"analog-input,{100 + n}"] = {"name": f"zone-temp-{n}", "value": 21.0 + n % 10 / 10,
                                            "units": "degreesCelsius"}
    objects = {objid: _object(objid, spec) for objid, spec in specs.items()}
    cls = Application if cov else NoCovApplication
    app = cls.from_object_list([device, port, *objects.values()])
    return app, objects


def _apply_faults(objects: dict[str, Any], path: Path, applied: dict[str, Any]) -> None:
    try:
        faults = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return  # being rewritten: next time
    for objid, obj in objects.items():
        f = faults.get(objid, {})
        if applied.get(objid) == f:
            continue
        applied[objid] = f
        before = obj.statusFlags
        obj.outOfService = bool(f.get("out_of_service", False))
        obj.reliability = Reliability(f.get("reliability", "noFaultDetected"))
        # BACpypes3 derives status-flags from reliability and out-of-service, so no property change
        # reaches its COV detection: tell it, as a device's own firmware would notice the change.
        for notify in obj._property_monitors["statusFlags"]:
            notify(before, obj.statusFlags)
        if "value" in f:
            obj.presentValue = f["value"]


async def serve(args: argparse.Namespace) -> None:
    app, objects = build_application(args.address, args.instance, cov=not args.no_cov, max_apdu=args.max_apdu,
                                     segmentation=not args.no_segmentation, extra_analog=args.extra_analog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app.i_am()  # a controller announces itself when it starts (unicast peers learn of restarts this way)
    print(f"bacnet ahu device {args.instance} at {args.address} (cov={'no' if args.no_cov else 'yes'})", flush=True)
    applied: dict[str, Any] = {}
    faults = Path(args.faults) if args.faults else None
    step, ticks = 0, 0
    ticks_per_step = max(1, round(args.step_s / FAULT_POLL_S))
    try:
        while not stop.is_set():
            if faults is not None:
                _apply_faults(objects, faults, applied)
            ticks += 1
            if ticks % ticks_per_step == 0 and "value" not in applied.get("analog-input,1", {}):
                step += 1
                objects["analog-input,1"].presentValue = SUPPLY_SEQUENCE[step % len(SUPPLY_SEQUENCE)]
            try:
                await asyncio.wait_for(stop.wait(), FAULT_POLL_S)
            except TimeoutError:
                pass
    finally:
        app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.bacnet_ahu", description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="BACnet/IP address, e.g. 127.0.0.1:47809")
    parser.add_argument("--instance", type=int, default=1001, help="device instance")
    parser.add_argument("--no-cov", action="store_true", help="no SubscribeCOV service")
    parser.add_argument("--max-apdu", type=int, default=1476, choices=[50, 128, 206, 480, 1024, 1476])
    parser.add_argument("--no-segmentation", action="store_true")
    parser.add_argument("--step-s", type=float, default=1.0, help="period of the supply temperature's steps")
    parser.add_argument("--extra-analog", type=int, default=0, help="add analog-input,100.. (zone temperatures)")
    parser.add_argument("--faults", default="", help="JSON file of injected faults, polled while running")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
