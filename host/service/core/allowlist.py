"""The IP allowlist: CIDR ranges from which the service takes requests at all."""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Iterable, Sequence

from ..audit import AuditLog
from .errors import BadInput, Conflict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT = ("127.0.0.0/8", "::1/128")
"""What `serve init` allows unless told otherwise: this machine only."""


def parse(cidrs: Iterable[str]) -> list[Network]:
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise BadInput(
                f"{text!r} is not an address range: write it as CIDR, e.g. 10.0.0.0/24"
            ) from None
    return networks


def load(conn: sqlite3.Connection) -> list[Network]:
    return parse(r[0] for r in conn.execute("SELECT cidr FROM allowlist ORDER BY cidr"))


def allows(networks: Sequence[Network], address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def replace(
    conn: sqlite3.Connection,
    audit: AuditLog,
    cidrs: Sequence[str],
    *,
    actor: str,
    address: str,
    confirm_lockout: bool = False,
) -> list[Network]:
    """Replace the allowlist; one that shuts out ``address`` needs ``confirm_lockout``."""
    networks = parse(cidrs)
    if not networks:
        raise BadInput("the allowlist cannot be empty: it would refuse every request")
    if not allows(networks, address) and not confirm_lockout:
        raise Conflict(
            f"this allowlist does not include your own address {address}: after saving it "
            "you could not reach the service from here; confirm to save it anyway"
        )
    before = [str(n) for n in load(conn)]
    conn.execute("DELETE FROM allowlist")
    conn.executemany(
        "INSERT OR IGNORE INTO allowlist (cidr) VALUES (?)", [(str(n),) for n in networks]
    )
    audit.append(
        "allowlist.replace",
        actor=actor,
        address=address,
        detail={"before": before, "after": [str(n) for n in networks]},
    )
    return networks
