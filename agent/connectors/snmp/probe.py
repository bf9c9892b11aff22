"""`twin-agent probe snmp`: GET or walk OIDs on an agent, or read a profile, and print each value decoded.

Shows every variable's OID, SMI syntax and value as the connector would decode it, so a person can
check credentials, find a table's row indexes for `index_map`, and see whether a vendor's agent
implements a profile before writing the config. v3 keys come from environment variables, never
from the command line (where `ps` would show them).

    twin-agent probe snmp --host 192.0.2.5 --community-env SNMP_COMMUNITY --profile ups-mib
    TWIN_SNMP_AUTH_KEY=... TWIN_SNMP_PRIV_KEY=... twin-agent probe snmp --host pdu --user twin \
        --walk 1.3.6.1.2.1.99.1.1.1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from agent.connectors.snmp.codec import COUNTER_BITS, Decoding, SnmpValue, decode
from agent.connectors.snmp.config import OID, Credentials, parse_oid
from agent.connectors.snmp.profile import load_profile, profile_names
from agent.connectors.snmp.session import Oid, SnmpSession, new_engine
from runtime.errors import DecodeError, SourceError

__all__ = ["add_arguments", "describe", "run"]

AUTH_KEY_ENV = "TWIN_SNMP_AUTH_KEY"
PRIV_KEY_ENV = "TWIN_SNMP_PRIV_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=161)
    parser.add_argument("--community-env", default="", help="variable holding the v2c community (default: public)")
    parser.add_argument("--user", default="", help="SNMPv3 user (authPriv; keys from $TWIN_SNMP_AUTH_KEY and "
                                                   "$TWIN_SNMP_PRIV_KEY)")
    parser.add_argument("--auth-protocol", default="SHA", choices=["MD5", "SHA", "SHA224", "SHA256", "SHA384",
                                                                   "SHA512"])
    parser.add_argument("--priv-protocol", default="AES", choices=["DES", "AES", "AES192", "AES256"])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--get", nargs="+", metavar="OID", help="GET these OIDs (with their instance, e.g. ...0)")
    what.add_argument("--walk", metavar="OID", help="walk the subtree (GETBULK)")
    what.add_argument("--profile", choices=profile_names(), help="GET every scalar of a shipped profile")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--retries", type=int, default=1)


def _shown(value: SnmpValue, decoding: Decoding) -> str:
    if value.syntax in COUNTER_BITS:
        return f"{value.value} (a counter: the connector reports its rate by default)"
    try:
        return repr(decode(value, decoding))
    except DecodeError as exc:
        return f"<{exc}>"


def describe(rows: Sequence[tuple[str, Oid, SnmpValue, Decoding]]) -> str:
    """One line per variable: name (if known), OID, syntax, decoded value (pure; tested)."""
    width = max((len(name) for name, *_ in rows), default=0)
    lines = []
    for name, oid, value, decoding in rows:
        label = f"{name:<{width}}  " if width else ""
        lines.append(f"{label}{'.'.join(map(str, oid))}  {value.syntax}  {_shown(value, decoding)}")
    return "\n".join(lines) if lines else "no variables"


def _credentials(args: argparse.Namespace) -> Credentials:
    if args.user:
        auth, priv = os.environ.get(AUTH_KEY_ENV, ""), os.environ.get(PRIV_KEY_ENV, "")
        if not auth or not priv:
            raise ValueError(f"SNMPv3 needs ${AUTH_KEY_ENV} and ${PRIV_KEY_ENV}")
        return Credentials("3", user=args.user, auth_protocol=args.auth_protocol, auth_key=auth,
                           priv_protocol=args.priv_protocol, priv_key=priv)
    community = os.environ.get(args.community_env, "") if args.community_env else "public"
    if not community:
        raise ValueError(f"${args.community_env} is not set")
    return Credentials("2c", community=community)


async def _read(args: argparse.Namespace) -> list[tuple[str, Oid, SnmpValue, Decoding]]:
    engine = new_engine()
    session = SnmpSession(engine, args.host, args.port, _credentials(args), args.timeout, args.retries)
    try:
        if args.walk:
            column = parse_oid(args.walk)
            rows = (await session.walk([column], 25))[column]
            return [("", (*column, *index), v, Decoding()) for index, v in sorted(rows.items())]
        if args.get:
            oids = [parse_oid(o) for o in args.get]
            return [("", o, v, Decoding()) for o, v in zip(oids, await session.get(oids), strict=True)]
        points = load_profile(args.profile).get("points", [])
        oids = [parse_oid(p["oid"]) for p in points]
        values = await session.get(oids)
        return [(p["name"], o, v, Decoding(enum=tuple(p.get("enum", {}).items()),
                                           true_values=frozenset(p.get("true_values", [])),
                                           scale=p.get("scale", 1.0)))
                for p, o, v in zip(points, oids, values, strict=True)]
    finally:
        engine.close_dispatcher()


def run(args: argparse.Namespace) -> int:
    """Probe once; 0 on success, 1 if the agent is silent or refuses, 2 on usage."""
    for oid in [*(args.get or []), *([args.walk] if args.walk else [])]:
        if not OID.match(oid):
            print(f"{oid!r} is not a numeric OID", file=sys.stderr)
            return 2
    try:
        rows = asyncio.run(_read(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SourceError as exc:
        print(f"error: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"SNMP probe: {args.host}:{args.port} ({'v3 ' + args.user if args.user else 'v2c'})")
    print(describe(rows))
    return 0
