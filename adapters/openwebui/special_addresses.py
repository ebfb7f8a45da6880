"""Address blocks that are not ordinary public hosts, as data for the SSRF guard.

Two IANA registries decide whether an address is globally reachable:

* the IPv4 Special-Purpose Address Registry and the IPv6 Special-Purpose
  Address Registry (RFC 6890, updated by RFC 8190). Each entry has a
  "Globally Reachable" column; it is copied here entry by entry, with the RFC
  the registry cites. Where the registry says "N/A" or leaves the cell blank
  (terminated entries) the flag is ``None``: *not* listed as reachable;
* the IPv4 and IPv6 Address Space registries, for what the special-purpose
  registries leave out: IPv4 multicast (224.0.0.0/4), and every IPv6 block
  outside 2000::/3, the only IPv6 space IANA hands out for global unicast.

Entries nest: a more specific entry overrides the one around it (192.0.0.9/32,
PCP anycast, is reachable although 192.0.0.0/24 is not; registry footnote:
"not usable unless by virtue of a more specific reservation"). The guard
therefore decides by the most specific entry that contains an address.

Transcribed from the registries as they stood in 2025 (latest entries:
2001:1::3/128, RFC 9665; 100:0:0:1::/64, RFC 9780). When IANA adds an entry,
add it here with a test; nothing in this module updates itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = [
    "IPV4_COMPATIBLE",
    "IPV4_MULTICAST",
    "IPV4_SPECIAL_PURPOSE",
    "IPV4_TRANSLATED",
    "IPV6_GLOBAL_UNICAST",
    "IPV6_OUTSIDE_GLOBAL_UNICAST",
    "IPV6_SPECIAL_PURPOSE",
    "AddressBlock",
]


@dataclass(frozen=True, slots=True)
class AddressBlock:
    """One registry entry: the block, its name, the RFC behind it, and its reachability."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    #: What the block is: the registry's name, in lower case where it is not a proper name.
    name: str
    #: The RFCs (and sections) the registry cites for it.
    rfc: str
    #: The registry's "Globally Reachable": True, False, or None for "N/A" or blank.
    globally_reachable: bool | None

    @property
    def described(self) -> str:
        """``10.0.0.0/8 (private use, RFC 1918)``: for messages a person reads."""
        return f"{self.network} ({self.name}, {self.rfc})"


def _block(cidr: str, name: str, rfc: str, globally_reachable: bool | None) -> AddressBlock:
    return AddressBlock(ipaddress.ip_network(cidr), name, rfc, globally_reachable)


# -- IANA IPv4 Special-Purpose Address Registry, in the registry's order ------------

IPV4_SPECIAL_PURPOSE: tuple[AddressBlock, ...] = (
    _block("0.0.0.0/8", "this network", "RFC 791 §3.2", False),
    _block("0.0.0.0/32", "this host on this network", "RFC 1122 §3.2.1.3", False),
    _block("10.0.0.0/8", "private use", "RFC 1918", False),
    _block("100.64.0.0/10", "shared address space", "RFC 6598", False),
    # The registry's footnote: several protocols have been granted exceptions;
    # none of them makes loopback reachable from elsewhere.
    _block("127.0.0.0/8", "loopback", "RFC 1122 §3.2.1.3", False),
    _block("169.254.0.0/16", "link local", "RFC 3927", False),
    _block("172.16.0.0/12", "private use", "RFC 1918", False),
    # Not reachable "unless by virtue of a more specific reservation": the
    # entries below it decide for their own addresses, this one for the rest.
    _block("192.0.0.0/24", "IETF protocol assignments", "RFC 6890 §2.1", False),
    _block("192.0.0.0/29", "IPv4 service continuity prefix", "RFC 7335", False),
    _block("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", False),
    _block("192.0.0.9/32", "Port Control Protocol anycast", "RFC 7723", True),
    _block("192.0.0.10/32", "Traversal Using Relays around NAT anycast", "RFC 8155", True),
    # One registry row names both addresses; they are two entries here.
    _block("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", False),
    _block("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", False),
    _block("192.0.2.0/24", "documentation, TEST-NET-1", "RFC 5737", False),
    _block("192.31.196.0/24", "AS112-v4", "RFC 7535", True),
    _block("192.52.193.0/24", "AMT", "RFC 7450", True),
    # Terminated in 2015; the registry leaves every flag blank. Conservative
    # choice: blank is not "reachable", so the block is refused (as before).
    _block("192.88.99.0/24", "6to4 relay anycast, deprecated", "RFC 7526", None),
    _block("192.88.99.2/32", "6a44 relay anycast", "RFC 6751", False),
    _block("192.168.0.0/16", "private use", "RFC 1918", False),
    _block("192.175.48.0/24", "direct delegation AS112 service", "RFC 7534", True),
    _block("198.18.0.0/15", "benchmarking", "RFC 2544", False),
    _block("198.51.100.0/24", "documentation, TEST-NET-2", "RFC 5737", False),
    _block("203.0.113.0/24", "documentation, TEST-NET-3", "RFC 5737", False),
    _block("240.0.0.0/4", "reserved", "RFC 1112 §4", False),
    _block("255.255.255.255/32", "limited broadcast", "RFC 8190, RFC 919 §7", False),
)

# -- IANA IPv6 Special-Purpose Address Registry, in the registry's order ------------

IPV6_SPECIAL_PURPOSE: tuple[AddressBlock, ...] = (
    _block("::1/128", "loopback address", "RFC 4291", False),
    _block("::/128", "unspecified address", "RFC 4291", False),
    _block("::ffff:0:0/96", "IPv4-mapped address", "RFC 4291", False),
    # The well-known NAT64 prefix is reachable; what it reaches is the IPv4
    # address it carries, which the guard judges (RFC 6052 §3.1 forbids it for
    # non-global IPv4 addresses anyway).
    _block("64:ff9b::/96", "IPv4/IPv6 translation, well-known NAT64 prefix", "RFC 6052", True),
    _block("64:ff9b:1::/48", "IPv4/IPv6 translation, local use", "RFC 8215", False),
    _block("100::/64", "discard-only address block", "RFC 6666", False),
    _block("100:0:0:1::/64", "dummy IPv6 prefix", "RFC 9780", False),
    # Not reachable "unless allowed by a more specific allocation" (footnote).
    _block("2001::/23", "IETF protocol assignments", "RFC 2928", False),
    # "N/A": a Teredo address is as reachable as the IPv4 addresses it carries
    # (RFC 4380 §5). Conservative choice: refused unless both the server and
    # the client address it carries are globally reachable.
    _block("2001::/32", "Teredo", "RFC 4380, RFC 8190", None),
    _block("2001:1::1/128", "Port Control Protocol anycast", "RFC 7723", True),
    _block("2001:1::2/128", "Traversal Using Relays around NAT anycast", "RFC 8155", True),
    _block("2001:1::3/128", "DNS-SD Service Registration Protocol anycast", "RFC 9665", True),
    _block("2001:2::/48", "benchmarking", "RFC 5180, RFC Errata 1752", False),
    _block("2001:3::/32", "AMT", "RFC 7450", True),
    _block("2001:4:112::/48", "AS112-v6", "RFC 7535", True),
    # Terminated in 2014, flags blank: refused.
    _block("2001:10::/28", "ORCHID, deprecated", "RFC 4843", None),
    _block("2001:20::/28", "ORCHIDv2", "RFC 7343", True),
    _block("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs)", "RFC 9374", True),
    _block("2001:db8::/32", "documentation", "RFC 3849", False),
    # "N/A", like Teredo: refused unless the IPv4 address it carries is reachable.
    _block("2002::/16", "6to4", "RFC 3056", None),
    _block("2620:4f:8000::/48", "direct delegation AS112 service", "RFC 7534", True),
    _block("3fff::/20", "documentation", "RFC 9637", False),
    _block("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", False),
    _block("fc00::/7", "unique local", "RFC 4193, RFC 8190", False),
    _block("fe80::/10", "link-local unicast", "RFC 4291", False),
)

# -- the address space registries: what is never a unicast host --------------------

#: IPv4 Address Space registry: 224/8 to 239/8 are multicast groups, not hosts.
IPV4_MULTICAST = _block("224.0.0.0/4", "multicast", "RFC 5771", False)

#: The only IPv6 space IANA allocates for global unicast (IPv6 Address Space).
IPV6_GLOBAL_UNICAST = _block("2000::/3", "global unicast", "RFC 4291", True)

#: Every other block of the IPv6 Address Space registry. None of it is global
#: unicast; addresses here that the special-purpose registry marks reachable
#: (the well-known NAT64 prefix 64:ff9b::/96 inside ::/8) are decided by that
#: more specific entry. Together with 2000::/3 these cover all of IPv6 once.
IPV6_OUTSIDE_GLOBAL_UNICAST: tuple[AddressBlock, ...] = (
    _block("::/8", "reserved by the IETF", "RFC 4291", False),
    _block("100::/8", "reserved by the IETF", "RFC 4291", False),
    _block("200::/7", "reserved by the IETF, formerly NSAP", "RFC 4048", False),
    _block("400::/6", "reserved by the IETF", "RFC 4291", False),
    _block("800::/5", "reserved by the IETF", "RFC 4291", False),
    _block("1000::/4", "reserved by the IETF", "RFC 4291", False),
    _block("4000::/3", "reserved by the IETF", "RFC 4291", False),
    _block("6000::/3", "reserved by the IETF", "RFC 4291", False),
    _block("8000::/3", "reserved by the IETF", "RFC 4291", False),
    _block("a000::/3", "reserved by the IETF", "RFC 4291", False),
    _block("c000::/3", "reserved by the IETF", "RFC 4291", False),
    _block("e000::/4", "reserved by the IETF", "RFC 4291", False),
    _block("f000::/5", "reserved by the IETF", "RFC 4291", False),
    _block("f800::/6", "reserved by the IETF", "RFC 4291", False),
    _block("fc00::/7", "unique local unicast", "RFC 4193", False),
    _block("fe00::/9", "reserved by the IETF", "RFC 4291", False),
    _block("fe80::/10", "link-scoped unicast", "RFC 4291", False),
    _block("fec0::/10", "reserved by the IETF, formerly site-local", "RFC 3879", False),
    _block("ff00::/8", "multicast", "RFC 4291", False),
)

# -- IPv6 forms that carry an IPv4 address and are in no special-purpose entry ------

#: ``::a.b.c.d``: deprecated, and never routed (it lies in ::/8).
IPV4_COMPATIBLE = _block("::/96", "IPv4-compatible, deprecated", "RFC 4291 §2.5.5.1", False)
#: ``::ffff:0:a.b.c.d``: the stateless translator's form, long obsolete (RFC 6145).
IPV4_TRANSLATED = _block("::ffff:0:0:0/96", "IPv4-translated, obsolete", "RFC 2765 §2.1", False)
