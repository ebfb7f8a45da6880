"""The SSRF guard: may the server fetch this URL, and at which vetted addresses?

A user (or a model) hands the pipe a URL to download. Without a guard that is
a way into the server's own network: the cloud metadata service, Redis on
localhost, an admin panel on 10.x. ``vet`` answers with a ``VettedTarget``
(the host name for TLS and the ``Host`` header, and the exact addresses it
resolved and judged) or raises ``UnsafeUrl`` with a reason a person can act
on. The downloader then connects **to those addresses only**, never resolving
the name again, so a DNS answer that changes between check and connect (DNS
rebinding) cannot move the request somewhere else.

Rules (seed §E and §K.2.26; each has tests):

* scheme ``https`` (any case); plain ``http`` only for hosts the caller
  allows; no user-info (``https://example.com@127.0.0.1/`` reads as a visit
  to example.com but goes to 127.0.0.1);
* the host is normalised (lower case, one trailing dot dropped, IDN to
  punycode); an empty or malformed host is refused;
* numeric spellings resolvers accept are read as the address they mean
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``);
* every address (a literal, or every A/AAAA answer) must be globally
  reachable; one bad answer among good ones refuses the whole name. What
  that means is data, in ``adapters.openwebui.special_addresses``, not Python's
  ``is_global`` (which lags the registries: ``fe00::1``, ``5f00::1`` and
  ``3fff::1`` are "global" to it):

  - the IANA IPv4 and IPv6 Special-Purpose Address Registries, entry by
    entry: an address in an entry is refused unless the most specific entry
    holding it says "globally reachable" (so loopback, private-use, shared
    100.64.0.0/10, link-local with the metadata service, documentation
    including ``3fff::/20``, benchmarking, discard, SRv6 ``5f00::/16``,
    unique-local, IPv4-mapped and the rest are refused, while AS112, AMT,
    ORCHIDv2 and the PCP/TURN anycast addresses pass); "N/A" or blank is not
    "reachable";
  - beyond those entries, IPv4 multicast (224.0.0.0/4) and every IPv6
    address outside 2000::/3 (reserved ``fe00::/9``, the old site-local
    ``fec0::/10``, multicast ``ff00::/8``, ...), none of which is a unicast
    host on the internet;
  - IPv6 forms that carry an IPv4 address: the well-known NAT64 prefix
    ``64:ff9b::/96`` (reachable), 6to4 ``2002::/16`` and Teredo
    ``2001::/32`` (both "N/A") pass only if every IPv4 address they carry
    does (6to4: bits 16..47; Teredo: the server in bits 32..63 and the
    client, inverted, in the low 32 bits). IPv4-mapped ``::ffff:0:0/96``,
    IPv4-compatible ``::/96``, IPv4-translated ``::ffff:0:0:0/96`` and
    local-use NAT64 ``64:ff9b:1::/48`` are refused whatever they carry, and
    the message names the carried address when that one is not public too
    (for local-use NAT64 read in each RFC 6052 layout a sub-prefix of the
    /48 can use: /48, /56, /64 and /96);
  - not covered: space inside 2000::/3 that IANA has not allocated (not
    routed anywhere), and an operator's own network-specific NAT64 prefix,
    which looks like any other global address;
* a name that does not resolve is refused (unknown is not safe);
* redirects: ``vet_redirect`` resolves ``Location`` against the current URL,
  refuses a step down from https to http, counts hops, and vets the new URL
  the same way.

``allow_loopback`` exists for tests that download from a server on
127.0.0.1; it is off by default and must never be turned on in production.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from orpipe.adapters.openwebui.refusal import Refusal
from orpipe.adapters.openwebui.special_addresses import (
    IPV4_COMPATIBLE,
    IPV4_MULTICAST,
    IPV4_SPECIAL_PURPOSE,
    IPV4_TRANSLATED,
    IPV6_GLOBAL_UNICAST,
    IPV6_OUTSIDE_GLOBAL_UNICAST,
    IPV6_SPECIAL_PURPOSE,
    AddressBlock,
)

__all__ = [
    "AsyncioResolver",
    "IPAddress",
    "Resolver",
    "UnsafeUrl",
    "VettedTarget",
    "address_problem",
    "rfc6052_ipv4",
    "vet",
    "vet_redirect",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"https": 443, "http": 80}

# The special-purpose entries, broadest first, so the last one holding an
# address is the most specific: the one that decides.
_V4_SPECIAL = tuple(sorted(IPV4_SPECIAL_PURPOSE, key=lambda b: b.network.prefixlen))
_V6_SPECIAL = tuple(sorted(IPV6_SPECIAL_PURPOSE, key=lambda b: b.network.prefixlen))


def _v6_entry(cidr: str) -> AddressBlock:
    network = ipaddress.IPv6Network(cidr)
    return next(entry for entry in IPV6_SPECIAL_PURPOSE if entry.network == network)


_MAPPED = _v6_entry("::ffff:0:0/96")
_NAT64_LOCAL_USE = _v6_entry("64:ff9b:1::/48")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")

#: RFC 6052 §2.2: where the 32 bits of the IPv4 address sit after a NAT64
#: prefix of each length, as (first bit, bit count) runs. Bits 64..71 (the
#: "u" octet) are always skipped.
_RFC6052_RUNS: dict[int, tuple[tuple[int, int], ...]] = {
    32: ((32, 32),),
    40: ((40, 24), (72, 8)),
    48: ((48, 16), (72, 16)),
    56: ((56, 8), (72, 24)),
    64: ((72, 32),),
    96: ((96, 32),),
}
#: The layouts a sub-prefix of the local-use /48 can have.
_LOCAL_USE_LAYOUTS = (48, 56, 64, 96)

_OUTSIDE_GLOBAL_UNICAST = (
    f"outside {IPV6_GLOBAL_UNICAST.network}, the only IPv6 space allocated for global unicast"
)

#: What a refusal by a special-purpose entry says, by the entry's flag.
_VERDICTS = {
    False: "which IANA lists as not globally reachable",
    None: "which IANA does not list as globally reachable",
}


class UnsafeUrl(Refusal):
    """The URL may not be fetched; ``reason`` says why and what to do instead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VettedTarget:
    """A URL that passed the guard, and the addresses to connect to (and only those)."""

    scheme: str
    #: Normalised host name (punycode, lower case): for TLS and the Host header.
    host: str
    port: int
    #: Path and query, ready for the request line ("/a/b?c=1").
    target: str
    addresses: tuple[IPAddress, ...]

    @property
    def url(self) -> str:
        """The URL as vetted (user-info never included)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = _DEFAULT_PORTS.get(self.scheme)
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.target}"


class Resolver(Protocol):
    """Every address of a host name, resolved off the event loop."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class AsyncioResolver:
    """``loop.getaddrinfo``: runs in the loop's executor, never blocks asyncio."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return _addresses(info[4][0] for info in infos)


def _addresses(raw: object) -> list[IPAddress]:
    out: list[IPAddress] = []
    for text in raw:  # type: ignore[attr-defined]
        # Scoped IPv6 answers carry "%zone": the zone itself makes it link-local.
        out.append(ipaddress.ip_address(str(text).split("%", 1)[0]))
    return out


# -- the checks ---------------------------------------------------------------------


async def vet(
    url: str,
    *,
    resolver: Resolver,
    allow_http_hosts: Collection[str] = (),
    allow_loopback: bool = False,
) -> VettedTarget:
    """Check ``url`` (see the module docstring); the target to connect to, or ``UnsafeUrl``."""
    scheme, host, port, target = _parse(url, allow_http_hosts)
    literal = _literal_address(host)
    if literal is not None:
        _judge(literal, host, allow_loopback)
        return VettedTarget(
            scheme=scheme, host=str(literal), port=port, target=target, addresses=(literal,)
        )
    try:
        addresses = await resolver.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(
            f"the host name {host!r} could not be resolved ({exc.__class__.__name__}); "
            "check the address, or upload the file instead"
        ) from None
    if not addresses:
        raise UnsafeUrl(f"the host name {host!r} has no addresses; check the address")
    for address in addresses:
        _judge(address, host, allow_loopback)
    unique = tuple(dict.fromkeys(addresses))
    return VettedTarget(scheme=scheme, host=host, port=port, target=target, addresses=unique)


async def vet_redirect(
    current: VettedTarget,
    location: str,
    *,
    hop: int,
    max_hops: int,
    resolver: Resolver,
    allow_http_hosts: Collection[str] = (),
    allow_loopback: bool = False,
) -> VettedTarget:
    """The target of a redirect from ``current`` (hop number ``hop``, from 1)."""
    if hop > max_hops:
        raise UnsafeUrl(
            f"the server redirected more than {max_hops} times; download from the final address"
        )
    if not location.strip():
        raise UnsafeUrl("the server sent a redirect without a location")
    absolute = urllib.parse.urljoin(current.url, location.strip())
    if current.scheme == "https" and absolute.lower().startswith("http://"):
        host = (urllib.parse.urlsplit(absolute).hostname or "").lower()
        if host not in allow_http_hosts:
            raise UnsafeUrl(
                "the server redirected from https to plain http, which is refused; "
                "use an https address"
            )
    return await vet(
        absolute,
        resolver=resolver,
        allow_http_hosts=allow_http_hosts,
        allow_loopback=allow_loopback,
    )


def address_problem(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` is not globally reachable (see the module docstring); None when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_problem(address, allow_loopback)
    if allow_loopback and address.is_loopback:
        return None
    carried = _judged_by_carried(address)
    if carried is not None:
        # Reachable (NAT64) or "N/A" (6to4, Teredo): as good as what they carry.
        return _carried_problem(carried, allow_loopback)
    refused = _refused_carrier(address)
    if refused is not None:
        carried, refusal = refused
        # Refused in any case; a bad carried address is the more telling reason.
        return _carried_problem(carried, allow_loopback) or refusal
    decided = _registry_refusal(address, _V6_SPECIAL)
    if decided is not None:
        return decided
    if address in IPV6_GLOBAL_UNICAST.network:
        return None
    for space in IPV6_OUTSIDE_GLOBAL_UNICAST:
        if address in space.network:
            return f"is in {space.described}, {_OUTSIDE_GLOBAL_UNICAST}"
    return _OUTSIDE_GLOBAL_UNICAST  # unreachable: the blocks cover all of IPv6 (tested)


def rfc6052_ipv4(address: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address ``address`` embeds after a NAT64 prefix of ``prefix_length`` bits.

    RFC 6052 §2.2 allows prefixes of 32, 40, 48, 56, 64 and 96 bits; any other
    length is a ``ValueError``.
    """
    runs = _RFC6052_RUNS.get(prefix_length)
    if runs is None:
        raise ValueError(f"RFC 6052 has no /{prefix_length} layout (32, 40, 48, 56, 64 or 96)")
    value = 0
    for first, count in runs:
        value = (value << count) | _bits(int(address), first, count)
    return ipaddress.IPv4Address(value)


def _v4_problem(address: ipaddress.IPv4Address, allow_loopback: bool) -> str | None:
    if allow_loopback and address.is_loopback:
        return None
    decided = _registry_refusal(address, _V4_SPECIAL)
    if decided is not None:
        return decided
    if address in IPV4_MULTICAST.network:
        return f"is in {IPV4_MULTICAST.described}, a multicast group, not a host"
    return None


def _registry_refusal(address: IPAddress, entries: Sequence[AddressBlock]) -> str | None:
    """Why the special-purpose registry refuses ``address``; None if it does not.

    It does not when no entry holds the address, or when the most specific
    entry that does says "globally reachable".
    """
    holding = [entry for entry in entries if address in entry.network]
    if not holding:
        return None
    deciding = holding[-1]
    if deciding.globally_reachable is True:
        return None
    return _listed(deciding, holding[0])


def _listed(deciding: AddressBlock, outermost: AddressBlock) -> str:
    refusal = f"is in {deciding.described}, {_VERDICTS[deciding.globally_reachable]}"
    if outermost is not deciding:
        net, name, rfc = outermost.network, outermost.name, outermost.rfc
        refusal += f" (within {net}: {name}, {rfc})"
    return refusal


def _carried_problem(
    carried: Sequence[tuple[str, ipaddress.IPv4Address]], allow_loopback: bool
) -> str | None:
    """The first carried IPv4 address that is not globally reachable, and why."""
    for form, v4 in carried:
        problem = _v4_problem(v4, allow_loopback)
        if problem is not None:
            return f"carries the IPv4 address {v4} ({form}), and {v4} {problem}"
    return None


def _judged_by_carried(
    address: ipaddress.IPv6Address,
) -> list[tuple[str, ipaddress.IPv4Address]] | None:
    """The IPv4 addresses a NAT64 (well-known), 6to4 or Teredo address carries."""
    if address in _NAT64_WELL_KNOWN:
        return [(f"NAT64, {_NAT64_WELL_KNOWN}", rfc6052_ipv4(address, 96))]
    if address.sixtofour is not None:
        return [(f"6to4, {_SIXTOFOUR}", address.sixtofour)]
    if address.teredo is not None:
        server, client = address.teredo
        return [(f"Teredo server, {_TEREDO}", server), (f"Teredo client, {_TEREDO}", client)]
    return None


def _refused_carrier(
    address: ipaddress.IPv6Address,
) -> tuple[list[tuple[str, ipaddress.IPv4Address]], str] | None:
    """For a form refused whatever it carries: the IPv4 addresses it may carry, and the refusal."""
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _MAPPED.network:
        return [(f"IPv4-mapped, {_MAPPED.network}", low)], _listed(_MAPPED, _MAPPED)
    for block, form in ((IPV4_TRANSLATED, "IPv4-translated"), (IPV4_COMPATIBLE, "IPv4-compatible")):
        if address in block.network and int(address) > 1:  # :: and ::1 are entries of their own
            refusal = f"is in {block.described}, {_OUTSIDE_GLOBAL_UNICAST}"
            return [(f"{form}, {block.network}", low)], refusal
    if address in _NAT64_LOCAL_USE.network:
        # The operator picks a sub-prefix of the /48, and with it the layout;
        # any of them may be meant. Only well-formed readings count (u octet
        # and suffix zero), the /48 one first.
        carried = []
        for length in _LOCAL_USE_LAYOUTS:
            if _rfc6052_well_formed(address, length):
                form = f"local-use NAT64, {_NAT64_LOCAL_USE.network}, RFC 6052 /{length} layout"
                carried.append((form, rfc6052_ipv4(address, length)))
        return carried, _listed(_NAT64_LOCAL_USE, _NAT64_LOCAL_USE)
    return None


def _rfc6052_well_formed(address: ipaddress.IPv6Address, prefix_length: int) -> bool:
    """Whether the bits RFC 6052 wants zero are zero: the u octet, and the suffix."""
    if prefix_length == 96:  # the IPv4 address fills the rest; no u octet, no suffix
        return True
    first, count = _RFC6052_RUNS[prefix_length][-1]
    end = first + count
    return _bits(int(address), 64, 8) == 0 and _bits(int(address), end, 128 - end) == 0


def _bits(value: int, first: int, count: int) -> int:
    """Bits ``first`` to ``first + count - 1`` of a 128-bit value, bit 0 the highest."""
    return (value >> (128 - first - count)) & ((1 << count) - 1)


def _judge(address: IPAddress, host: str, allow_loopback: bool) -> None:
    problem = address_problem(address, allow_loopback=allow_loopback)
    if problem is not None:
        shown = host if host == str(address) else f"{host} ({address})"
        raise UnsafeUrl(f"{shown} {problem}; only public addresses can be downloaded from")


# -- parsing ------------------------------------------------------------------------


def _parse(url: str, allow_http_hosts: Collection[str]) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or not url.strip():
        raise UnsafeUrl("the URL is empty")
    text = url.strip()
    if any(ch in text for ch in "\r\n\t\x00"):
        raise UnsafeUrl("the URL contains control characters")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"the URL cannot be read ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl(f"the scheme {parts.scheme or '(none)'!r} is refused; use an https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl(
            "the URL contains a user name or password before '@', which hides where it "
            "really goes; remove it"
        )
    raw_host = parts.hostname or ""
    if "%" in raw_host:
        raise UnsafeUrl("the URL names an IPv6 zone (link-local), which is not public")
    host = _normalise_host(raw_host)
    if scheme == "http" and host not in {h.lower().rstrip(".") for h in allow_http_hosts}:
        raise UnsafeUrl(
            "plain http is refused (it can be read and changed on the way); use an https address"
        )
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme], target


def _normalise_host(raw: str) -> str:
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or host.startswith(".") or ".." in host:
        raise UnsafeUrl("the URL has no usable host name")
    if ":" in host:  # an IPv6 literal (brackets already removed by urlsplit)
        return host
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeUrl(f"the host name {raw!r} is not a valid international name") from None
    if not all(label and len(label) <= 63 for label in ascii_host.split(".")):
        raise UnsafeUrl(f"the host name {raw!r} is not valid")
    return ascii_host


def _literal_address(host: str) -> IPAddress | None:
    """The address a host spelled as a number means, in every form resolvers accept."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeUrl(f"{host!r} is not a valid IPv6 address") from None
    labels = host.split(".")
    if len(labels) > 4 or not all(_is_number(label) for label in labels):
        return None
    try:
        values = [_label_value(label) for label in labels]
    except ValueError:
        return None
    # inet_aton: the last label fills every byte the earlier ones did not.
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise UnsafeUrl(f"{host!r} is not a valid IPv4 address")
    number = 0
    for value in head:
        number = number * 256 + value
    number = number * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(number)


def _is_number(label: str) -> bool:
    lowered = label.lower()
    if lowered.startswith("0x"):
        return len(lowered) > 2 and all(c in "0123456789abcdef" for c in lowered[2:])
    return label.isdigit()


def _label_value(label: str) -> int:
    """One label as C's ``inet_aton`` reads it: 0x hex, leading-0 octal, else decimal."""
    if label.lower().startswith("0x"):
        return int(label[2:], 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    return int(label, 10)
