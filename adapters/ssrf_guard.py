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
* every address (a literal, or every A/AAAA answer) must be public: not
  private, loopback, link-local, multicast, reserved, unspecified, shared
  (100.64.0.0/10), benchmarking, documentation or broadcast; IPv6 forms that
  carry an IPv4 address (mapped, compatible, NAT64 ``64:ff9b::/96`` and
  ``64:ff9b:1::/48``, 6to4, Teredo) are judged by that address too; one bad
  answer among good ones refuses the whole name;
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

import trio

__all__ = [
    "AsyncioResolver",
    "IPAddress",
    "Resolver",
    "TrioResolver",
    "UnsafeUrl",
    "VettedTarget",
    "address_problem",
    "vet",
    "vet_redirect",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"https": 443, "http": 80}

#: IPv4 networks that are not the public internet, beyond ``ipaddress``'s flags
#: (``is_global`` misses some of these on older Pythons; listing them is clearer).
_V4_BLOCKED = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
_V6_BLOCKED = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "100::/64",  # discard
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class UnsafeUrl(Exception):
    """The URL may not be fetched; ``reason`` says why and what to do instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


class TrioResolver:
    """``trio.socket.getaddrinfo``: runs in a worker thread, never blocks trio."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return _addresses(info[4][0] for info in infos)


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
    """Why ``address`` is not a public internet address; None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            # Judged by the IPv4 host the packets really reach.
            problem = address_problem(embedded, allow_loopback=allow_loopback)
            if problem is not None:
                return f"carries the IPv4 address {embedded}, which {problem}"
            return None
        networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = _V6_BLOCKED
    else:
        networks = _V4_BLOCKED
    for network in networks:
        if address in network:
            if allow_loopback and address.is_loopback:
                return None
            return f"is in {network} ({_kind(address)}), not the public internet"
    if not address.is_global:
        return f"is not a public internet address ({_kind(address)})"
    return None


def _judge(address: IPAddress, host: str, allow_loopback: bool) -> None:
    problem = address_problem(address, allow_loopback=allow_loopback)
    if problem is not None:
        shown = host if host == str(address) else f"{host} ({address})"
        raise UnsafeUrl(f"{shown} {problem}; only public addresses can be downloaded from")


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_private:
        return "private"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_reserved:
        return "reserved"
    return "special-purpose"


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64[0] or address in _NAT64[1]:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's (obfuscated) address; the server is [0]
    if address in _V4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


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
