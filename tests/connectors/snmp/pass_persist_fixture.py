"""A net-snmp `pass_persist` program serving a JSON fixture: snmpd answers for the subtree, we supply values.

snmpd starts this program once and talks to it over stdin/stdout (snmpd.conf(5), "pass_persist"):
`PING` -> `PONG`; `get` / `getnext` followed by an OID -> the OID, its type and value, or `NONE`.
The fixture maps numeric OIDs to [type, value] with net-snmp's pass types (integer, gauge, counter,
counter64, timeticks, string, octet (hex), objectid, ipaddress); it is re-read when its file changes,
so a test can change a value (a counter wrap, a UPS going on battery) while snmpd runs.

    pass_persist .1.3.6.1.2.1.33 /usr/bin/python3 pass_persist_fixture.py ups.json
"""

from __future__ import annotations

import json
import os
import sys

Oid = tuple[int, ...]


def parse_oid(text: str) -> Oid:
    return tuple(int(x) for x in text.strip().strip(".").split(".") if x)


class Fixture:
    def __init__(self, path: str) -> None:
        self.path = path
        self.mtime = -1.0
        self.values: dict[Oid, tuple[str, object]] = {}
        self.order: list[Oid] = []

    def refresh(self) -> None:
        mtime = os.stat(self.path).st_mtime
        if mtime != self.mtime:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
            self.values = {parse_oid(k): (v[0], v[1]) for k, v in raw.items() if not k.startswith("#")}
            self.order = sorted(self.values)
            self.mtime = mtime

    def get(self, oid: Oid) -> Oid | None:
        return oid if oid in self.values else None

    def getnext(self, oid: Oid) -> Oid | None:
        return next((o for o in self.order if o > oid), None)


def answer(fixture: Fixture, oid: Oid | None) -> str:
    if oid is None:
        return "NONE\n"
    kind, value = fixture.values[oid]
    return "." + ".".join(map(str, oid)) + f"\n{kind}\n{value}\n"


def main() -> int:
    fixture = Fixture(sys.argv[1])
    for line in sys.stdin:
        command = line.strip()
        if command == "PING":
            sys.stdout.write("PONG\n")
        elif command in ("get", "getnext"):
            oid = parse_oid(sys.stdin.readline())
            fixture.refresh()
            sys.stdout.write(answer(fixture, fixture.get(oid) if command == "get" else fixture.getnext(oid)))
        elif command == "set":
            sys.stdin.readline()
            sys.stdin.readline()
            sys.stdout.write("not-writable\n")
        elif command == "":
            return 0
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
