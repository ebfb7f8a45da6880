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


#: The "Globally Reachable" column as the tables below write it.
_REACHABLE = {"yes": True, "no": False, "n/a": None}


def _registry(table: str) -> tuple[AddressBlock, ...]:
    """A registry transcribed as a table: ``block | globally reachable | name | RFC``.

    One entry a line, in the registry's order; "n/a" stands for the registry's
    "N/A" and for a blank cell. Lines starting with ``#`` are notes on the
    entries below them.
    """
    entries = []
    for line in table.splitlines():
        if line.strip() and not line.startswith("#"):
            cidr, reachable, name, rfc = (cell.strip() for cell in line.split("|"))
            entries.append(_block(cidr, name, rfc, _REACHABLE[reachable]))
    return tuple(entries)


# -- IANA IPv4 Special-Purpose Address Registry, in the registry's order ------------

IPV4_SPECIAL_PURPOSE = _registry("""
0.0.0.0/8          | no  | this network                              | RFC 791 §3.2
0.0.0.0/32         | no  | this host on this network                 | RFC 1122 §3.2.1.3
10.0.0.0/8         | no  | private use                               | RFC 1918
100.64.0.0/10      | no  | shared address space                      | RFC 6598
# The registry's footnote: several protocols have been granted exceptions;
# none of them makes loopback reachable from elsewhere.
127.0.0.0/8        | no  | loopback                                  | RFC 1122 §3.2.1.3
169.254.0.0/16     | no  | link local                                | RFC 3927
172.16.0.0/12      | no  | private use                               | RFC 1918
# Not reachable "unless by virtue of a more specific reservation": the
# entries below it decide for their own addresses, this one for the rest.
192.0.0.0/24       | no  | IETF protocol assignments                 | RFC 6890 §2.1
192.0.0.0/29       | no  | IPv4 service continuity prefix            | RFC 7335
192.0.0.8/32       | no  | IPv4 dummy address                        | RFC 7600
192.0.0.9/32       | yes | Port Control Protocol anycast             | RFC 7723
192.0.0.10/32      | yes | Traversal Using Relays around NAT anycast | RFC 8155
# One registry row names both addresses; they are two entries here.
192.0.0.170/32     | no  | NAT64/DNS64 Discovery                     | RFC 8880, RFC 7050 §2.2
192.0.0.171/32     | no  | NAT64/DNS64 Discovery                     | RFC 8880, RFC 7050 §2.2
192.0.2.0/24       | no  | documentation, TEST-NET-1                 | RFC 5737
192.31.196.0/24    | yes | AS112-v4                                  | RFC 7535
192.52.193.0/24    | yes | AMT                                       | RFC 7450
# Terminated in 2015; the registry leaves every flag blank. Conservative
# choice: blank is not "reachable", so the block is refused (as before).
192.88.99.0/24     | n/a | 6to4 relay anycast, deprecated            | RFC 7526
192.88.99.2/32     | no  | 6a44 relay anycast                        | RFC 6751
192.168.0.0/16     | no  | private use                               | RFC 1918
192.175.48.0/24    | yes | direct delegation AS112 service           | RFC 7534
198.18.0.0/15      | no  | benchmarking                              | RFC 2544
198.51.100.0/24    | no  | documentation, TEST-NET-2                 | RFC 5737
203.0.113.0/24     | no  | documentation, TEST-NET-3                 | RFC 5737
240.0.0.0/4        | no  | reserved                                  | RFC 1112 §4
255.255.255.255/32 | no  | limited broadcast                         | RFC 8190, RFC 919 §7
""")

# -- IANA IPv6 Special-Purpose Address Registry, in the registry's order ------------

IPV6_SPECIAL_PURPOSE = _registry("""
::1/128           | no  | loopback address                               | RFC 4291
::/128            | no  | unspecified address                            | RFC 4291
::ffff:0:0/96     | no  | IPv4-mapped address                            | RFC 4291
# The well-known NAT64 prefix is reachable; what it reaches is the IPv4
# address it carries, which the guard judges (RFC 6052 §3.1 forbids it for
# non-global IPv4 addresses anyway).
64:ff9b::/96      | yes | IPv4/IPv6 translation, well-known NAT64 prefix | RFC 6052
64:ff9b:1::/48    | no  | IPv4/IPv6 translation, local use               | RFC 8215
100::/64          | no  | discard-only address block                     | RFC 6666
100:0:0:1::/64    | no  | dummy IPv6 prefix                              | RFC 9780
# Not reachable "unless allowed by a more specific allocation" (footnote).
2001::/23         | no  | IETF protocol assignments                      | RFC 2928
# "N/A": a Teredo address is as reachable as the IPv4 addresses it carries
# (RFC 4380 §5). Conservative choice: refused unless both the server and
# the client address it carries are globally reachable.
2001::/32         | n/a | Teredo                                         | RFC 4380, RFC 8190
2001:1::1/128     | yes | Port Control Protocol anycast                  | RFC 7723
2001:1::2/128     | yes | Traversal Using Relays around NAT anycast      | RFC 8155
2001:1::3/128     | yes | DNS-SD Service Registration Protocol anycast   | RFC 9665
2001:2::/48       | no  | benchmarking                                   | RFC 5180, RFC Errata 1752
2001:3::/32       | yes | AMT                                            | RFC 7450
2001:4:112::/48   | yes | AS112-v6                                       | RFC 7535
# Terminated in 2014, flags blank: refused.
2001:10::/28      | n/a | ORCHID, deprecated                             | RFC 4843
2001:20::/28      | yes | ORCHIDv2                                       | RFC 7343
2001:30::/28      | yes | Drone Remote ID Protocol Entity Tags (DETs)    | RFC 9374
2001:db8::/32     | no  | documentation                                  | RFC 3849
# "N/A", like Teredo: refused unless the IPv4 address it carries is reachable.
2002::/16         | n/a | 6to4                                           | RFC 3056
2620:4f:8000::/48 | yes | direct delegation AS112 service                | RFC 7534
3fff::/20         | no  | documentation                                  | RFC 9637
5f00::/16         | no  | Segment Routing (SRv6) SIDs                    | RFC 9602
fc00::/7          | no  | unique local                                   | RFC 4193, RFC 8190
fe80::/10         | no  | link-local unicast                             | RFC 4291
""")

# -- the address space registries: what is never a unicast host --------------------

#: IPv4 Address Space registry: 224/8 to 239/8 are multicast groups, not hosts.
IPV4_MULTICAST = _block("224.0.0.0/4", "multicast", "RFC 5771", False)

#: The only IPv6 space IANA allocates for global unicast (IPv6 Address Space).
IPV6_GLOBAL_UNICAST = _block("2000::/3", "global unicast", "RFC 4291", True)

#: Every other block of the IPv6 Address Space registry. None of it is global
#: unicast; addresses here that the special-purpose registry marks reachable
#: (the well-known NAT64 prefix 64:ff9b::/96 inside ::/8) are decided by that
#: more specific entry. Together with 2000::/3 these cover all of IPv6 once.
IPV6_OUTSIDE_GLOBAL_UNICAST = _registry("""
::/8      | no  | reserved by the IETF                      | RFC 4291
100::/8   | no  | reserved by the IETF                      | RFC 4291
200::/7   | no  | reserved by the IETF, formerly NSAP       | RFC 4048
400::/6   | no  | reserved by the IETF                      | RFC 4291
800::/5   | no  | reserved by the IETF                      | RFC 4291
1000::/4  | no  | reserved by the IETF                      | RFC 4291
4000::/3  | no  | reserved by the IETF                      | RFC 4291
6000::/3  | no  | reserved by the IETF                      | RFC 4291
8000::/3  | no  | reserved by the IETF                      | RFC 4291
a000::/3  | no  | reserved by the IETF                      | RFC 4291
c000::/3  | no  | reserved by the IETF                      | RFC 4291
e000::/4  | no  | reserved by the IETF                      | RFC 4291
f000::/5  | no  | reserved by the IETF                      | RFC 4291
f800::/6  | no  | reserved by the IETF                      | RFC 4291
fc00::/7  | no  | unique local unicast                      | RFC 4193
fe00::/9  | no  | reserved by the IETF                      | RFC 4291
fe80::/10 | no  | link-scoped unicast                       | RFC 4291
fec0::/10 | no  | reserved by the IETF, formerly site-local | RFC 3879
ff00::/8  | no  | multicast                                 | RFC 4291
""")

# -- IPv6 forms that carry an IPv4 address and are in no special-purpose entry ------

#: ``::a.b.c.d``: deprecated, and never routed (it lies in ::/8).
IPV4_COMPATIBLE = _block("::/96", "IPv4-compatible, deprecated", "RFC 4291 §2.5.5.1", False)
#: ``::ffff:0:a.b.c.d``: the stateless translator's form, long obsolete (RFC 6145).
IPV4_TRANSLATED = _block("::ffff:0:0:0/96", "IPv4-translated, obsolete", "RFC 2765 §2.1", False)
