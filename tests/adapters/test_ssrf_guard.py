"""The SSRF guard: hostile URLs refused with their reason, public ones accepted, no network.

Names resolve through ``FakeResolver``; nothing here reaches the internet.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpipe.adapters.openwebui.special_addresses import (
    IPV4_MULTICAST,
    IPV4_SPECIAL_PURPOSE,
    IPV6_GLOBAL_UNICAST,
    IPV6_OUTSIDE_GLOBAL_UNICAST,
    IPV6_SPECIAL_PURPOSE,
    AddressBlock,
)
from orpipe.adapters.openwebui.ssrf_guard import (
    AsyncioResolver,
    IPAddress,
    UnsafeUrl,
    address_problem,
    rfc6052_ipv4,
    vet,
    vet_redirect,
)


class FakeResolver:
    """Answers from a table; a name not in it fails like NXDOMAIN. Counts lookups."""

    def __init__(self, table: Mapping[str, Sequence[str] | Sequence[Sequence[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(-2, "Name or service not known")
        answer = self.table[host]
        if answer and not isinstance(answer[0], str):  # a sequence of answers, one per lookup
            answer = answer[min(len(self.lookups), len(answer)) - 1]
        return [ipaddress.ip_address(a) for a in answer]  # type: ignore[arg-type]


PUBLIC = "93.184.215.14"
NAMES: dict[str, Sequence[str] | Sequence[Sequence[str]]] = {
    "example.com": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "files.example.org": ["151.101.1.69"],
    "xn--bcher-kva.example": ["151.101.65.69"],
    "localhost": ["127.0.0.1", "::1"],
    "intranet.corp": ["10.1.2.3"],
    "half.example.com": [PUBLIC, "192.168.1.10"],
    "metadata.example.com": ["169.254.169.254"],
    "cgnat.example.com": ["100.64.1.1"],
    "v6private.example.com": ["fd00::1"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "empty.example.com": [],
    "srv6.example.com": ["5f00::1"],
    "translated.example.com": ["::ffff:0:a9fe:a9fe"],
    "local-nat64.example.com": ["64:ff9b:1:a9fe:a9:fe00::"],
    "dual.example.com": [PUBLIC, "3fff::1"],
    "reserved6.example.com": ["fe00::1"],
}
resolver = FakeResolver(NAMES)


HOSTILE: list[tuple[str, str]] = [
    # schemes
    ("http://example.com/a.png", "plain http is refused"),
    ("HTTP://example.com/a.png", "plain http is refused"),
    ("HtTp://example.com/", "plain http is refused"),
    ("file:///etc/passwd", "scheme 'file' is refused"),
    ("gopher://example.com/_SLAVEOF", "scheme 'gopher' is refused"),
    ("ftp://example.com/x", "scheme 'ftp' is refused"),
    ("javascript:alert(1)", "scheme 'javascript' is refused"),
    ("dict://example.com:11211/", "scheme 'dict' is refused"),
    ("//example.com/no-scheme", "scheme '(none)' is refused"),
    ("", "the URL is empty"),
    ("https://example.com/\r\nHost: evil", "control characters"),
    # user-info tricks
    ("https://example.com@127.0.0.1/", "user name or password"),
    ("https://user:s3cr3t@example.com/", "user name or password"),
    ("https://example.com%40127.0.0.1@evil/", "user name or password"),
    ("https://@example.com/", "user name or password"),
    # loopback, private, link-local, special ranges as literals
    ("https://127.0.0.1/", "127.0.0.0/8"),
    ("https://127.8.9.10:8443/", "127.0.0.0/8"),
    ("https://10.0.0.1/", "10.0.0.0/8"),
    ("https://172.16.5.4/", "172.16.0.0/12"),
    ("https://172.31.255.255/", "172.16.0.0/12"),
    ("https://192.168.0.1/", "192.168.0.0/16"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
    ("https://100.64.0.1/", "100.64.0.0/10"),
    ("https://100.127.255.254/", "100.64.0.0/10"),
    ("https://0.0.0.0/", "0.0.0.0/8"),
    ("https://0.1.2.3/", "0.0.0.0/8"),
    ("https://224.0.0.1/", "224.0.0.0/4"),
    ("https://239.255.255.250/", "224.0.0.0/4"),
    ("https://240.0.0.1/", "240.0.0.0/4"),
    ("https://255.255.255.255/", "240.0.0.0/4"),
    ("https://198.18.0.1/", "198.18.0.0/15"),
    ("https://192.0.2.1/", "192.0.2.0/24"),
    ("https://203.0.113.9/", "203.0.113.0/24"),
    ("https://192.0.0.8/", "192.0.0.0/24"),
    # numeric spellings resolvers accept
    ("https://2130706433/", "127.0.0.0/8"),
    ("https://0177.0.0.1/", "127.0.0.0/8"),
    ("https://0x7f.1/", "127.0.0.0/8"),
    ("https://0x7F000001/", "127.0.0.0/8"),
    ("https://127.1/", "127.0.0.0/8"),
    ("https://127.0.1/", "127.0.0.0/8"),
    ("https://017700000001/", "127.0.0.0/8"),
    ("https://0xa.0.0.1/", "10.0.0.0/8"),
    ("https://3232235521/", "192.168.0.0/16"),
    ("https://0251.0376.0251.0376/", "169.254.0.0/16"),
    ("https://1.2.3.4.5/", "could not be resolved"),  # not a number form: a (bad) name
    ("https://256.1.1.1/", "not a valid IPv4 address"),
    # trailing dots and case
    ("https://LOCALHOST./", "localhost (127.0.0.1)"),
    ("https://localhost/", "localhost (127.0.0.1)"),
    ("https://127.0.0.1./", "127.0.0.0/8"),
    ("https://example.com../", "is not valid"),
    # IPv6 literals
    ("https://[::1]/", "::1/128"),
    ("https://[::]/", "::/128"),
    ("https://[fe80::1%25eth0]/", "IPv6 zone"),
    ("https://[fe80::1]/", "fe80::/10"),
    ("https://[fd12:3456::1]/", "fc00::/7"),
    ("https://[fec0::1]/", "fec0::/10"),
    ("https://[ff02::1]/", "ff00::/8"),
    ("https://[2001:db8::1]/", "2001:db8::/32"),
    ("https://[::ffff:127.0.0.1]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[::ffff:169.254.169.254]/", "carries the IPv4 address 169.254.169.254"),
    ("https://[::127.0.0.1]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[64:ff9b::a00:1]/", "carries the IPv4 address 10.0.0.1"),
    ("https://[64:ff9b:1::c0a8:1]/", "carries the IPv4 address 192.168.0.1"),
    ("https://[2002:7f00:1::]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[2002:a9fe:a9fe::1]/", "carries the IPv4 address 169.254.169.254"),
    # Teredo: the client address is stored inverted (10.0.0.1 → f5ff:fffe)
    ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "carries the IPv4 address 10.0.0.1"),
    ("https://[not-an-ip]/", "cannot be read"),
    # names that resolve somewhere they must not
    ("https://intranet.corp/report.pdf", "intranet.corp (10.1.2.3)"),
    ("https://half.example.com/", "half.example.com (192.168.1.10)"),
    ("https://metadata.example.com/", "169.254.0.0/16"),
    ("https://cgnat.example.com/", "100.64.0.0/10"),
    ("https://v6private.example.com/", "fc00::/7"),
    ("https://mapped.example.com/", "carries the IPv4 address 10.0.0.1"),
    ("https://unknown.invalid/", "could not be resolved"),
    ("https://empty.example.com/", "has no addresses"),
    # broken names
    ("https://exa mple.com/", "could not be resolved"),
    ("https://" + "a" * 64 + ".com/", "not a valid"),
    ("https://:443/", "no usable host name"),
    ("https://example.com:99999/", "cannot be read"),
    # -- special-purpose and reserved space Python's is_global lets through --
    # IPv4-translated (::ffff:0:a.b.c.d): refused, naming what it carries
    ("https://[::ffff:0:127.0.0.1]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[::ffff:0:169.254.169.254]/", "carries the IPv4 address 169.254.169.254"),
    ("https://[::ffff:0:7f00:1]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[::ffff:0:8.8.8.8]/", "::ffff:0:0:0/96"),  # even carrying a public address
    # IPv4-mapped and -compatible carrying a public address: still not reachable as IPv6
    ("https://[::ffff:8.8.8.8]/", "::ffff:0:0/96"),
    ("https://[::8.8.8.8]/", "::/96"),
    ("https://[::2]/", "carries the IPv4 address 0.0.0.2"),
    # reserved IPv6 outside 2000::/3
    ("https://[fe00::1]/", "fe00::/9"),
    ("https://[fe7f:ffff::1]/", "fe00::/9"),
    ("https://[4000::1]/", "4000::/3"),
    ("https://[e000::1]/", "e000::/4"),
    ("https://[200::1]/", "200::/7"),
    # new special-purpose entries
    ("https://[5f00::1]/", "5f00::/16"),
    ("https://[5f00:ffff::1]/", "Segment Routing"),
    ("https://[3fff::1]/", "3fff::/20"),
    ("https://[3fff:fff:ffff::1]/", "3fff::/20"),
    ("https://[100::1]/", "100::/64"),
    ("https://[100:0:0:1::1]/", "100:0:0:1::/64"),
    ("https://[2001:2::1]/", "2001:2::/48"),
    ("https://[2001:10::1]/", "2001:10::/28"),
    ("https://[2001:5::1]/", "2001::/23"),
    ("https://192.88.99.1/", "192.88.99.0/24"),
    ("https://192.88.99.2/", "192.88.99.2/32"),
    ("https://192.0.0.170/", "192.0.0.170/32"),
    ("https://192.0.0.171/", "192.0.0.171/32"),
    ("https://198.51.100.7/", "198.51.100.0/24"),
    ("https://0/", "this host on this network"),
    # local-use NAT64: refused in any case; the IPv4 address read in the RFC 6052
    # /48 layout (bits 48..63 and 72..87) is named when it is not public
    ("https://[64:ff9b:1:7f00:0:100::]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[64:ff9b:1:7f00:0001:0::]/", "carries the IPv4 address 127.0.1.0"),
    ("https://[64:ff9b:1:a9fe:a9:fe00::]/", "carries the IPv4 address 169.254.169.254"),
    ("https://[64:ff9b:1:a00:1::]/", "carries the IPv4 address 10.0.1.0"),
    ("https://[64:ff9b:1::808:808]/", "64:ff9b:1::/48"),  # public inside: still local use
    ("https://[64:ff9b:1:808:8:800::]/", "64:ff9b:1::/48"),
    # well-known NAT64, 6to4 and Teredo carrying non-public addresses
    ("https://[64:ff9b::127.0.0.1]/", "carries the IPv4 address 127.0.0.1"),
    ("https://[64:ff9b::169.254.169.254]/", "carries the IPv4 address 169.254.169.254"),
    ("https://[2002:c0a8:1::1]/", "carries the IPv4 address 192.168.0.1"),
    ("https://[2001:0:7f00:1:0:0:f7f7:f7f7]/", "127.0.0.1 (Teredo server"),
    ("https://[2001:0:a9fe:a9fe:0:0:f7f7:f7f7]/", "169.254.169.254 (Teredo server"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "192.0.2.45 (Teredo client"),
    # names that resolve into the same places
    ("https://srv6.example.com/", "srv6.example.com (5f00::1)"),
    ("https://translated.example.com/", "carries the IPv4 address 169.254.169.254"),
    ("https://local-nat64.example.com/", "carries the IPv4 address 169.254.169.254"),
    ("https://dual.example.com/", "3fff::/20"),
    ("https://reserved6.example.com/", "fe00::/9"),
]


def test_the_corpus_is_large() -> None:
    assert len(HOSTILE) >= 120
    assert len({url for url, _ in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
async def test_hostile_urls_are_refused_with_their_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        await vet(url, resolver=resolver)
    assert reason in refused.value.reason
    assert "s3cr3t" not in refused.value.reason  # user-info is never echoed


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("https://example.com/a.png", "example.com", 443, "/a.png"),
        ("HTTPS://Example.COM./a.png?x=1&y=2", "example.com", 443, "/a.png?x=1&y=2"),
        ("https://files.example.org:8443", "files.example.org", 8443, "/"),
        ("https://bücher.example/katalog", "xn--bcher-kva.example", 443, "/katalog"),
        ("https://93.184.215.14/img", PUBLIC, 443, "/img"),
        ("https://[2606:4700::6810:84e5]/", "2606:4700::6810:84e5", 443, "/"),
        ("https://[2002:5db8:d70e::1]/", "2002:5db8:d70e::1", 443, "/"),  # 6to4 of a public v4
    ],
)
async def test_ordinary_public_urls_pass(url: str, host: str, port: int, target: str) -> None:
    vetted = await vet(url, resolver=resolver)
    assert (vetted.host, vetted.port, vetted.target) == (host, port, target)
    assert vetted.addresses
    assert all(address_problem(a) is None for a in vetted.addresses)


async def test_http_only_for_allowed_hosts() -> None:
    vetted = await vet("http://example.com/x", resolver=resolver, allow_http_hosts={"example.com"})
    assert vetted.scheme == "http" and vetted.port == 80
    assert vetted.url == "http://example.com/x"


async def test_loopback_only_when_a_test_asks_and_never_private() -> None:
    vetted = await vet("https://127.0.0.1:8443/f", resolver=resolver, allow_loopback=True)
    assert vetted.addresses == (ipaddress.ip_address("127.0.0.1"),)
    with pytest.raises(UnsafeUrl):
        await vet("https://10.0.0.1/", resolver=resolver, allow_loopback=True)


async def test_dns_rebinding_cannot_move_the_connection() -> None:
    # First answer public, every later one private: the target keeps the first answer.
    rebinding = FakeResolver({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
    vetted = await vet("https://rebind.example.com/x", resolver=rebinding)
    assert vetted.addresses == (ipaddress.ip_address(PUBLIC),)
    assert rebinding.lookups == ["rebind.example.com"]  # resolved once, at vetting
    assert vetted.host == "rebind.example.com"  # kept for TLS and the Host header


async def test_redirects_are_vetted_hop_by_hop() -> None:
    start = await vet("https://example.com/a/b", resolver=resolver)
    relative = await vet_redirect(start, "../c?d=1", hop=1, max_hops=3, resolver=resolver)
    assert relative.url == "https://example.com/c?d=1"
    absolute = await vet_redirect(
        start, "https://files.example.org/x", hop=2, max_hops=3, resolver=resolver
    )
    assert absolute.host == "files.example.org"
    with pytest.raises(UnsafeUrl, match=r"169\.254"):
        await vet_redirect(start, "https://169.254.169.254/", hop=1, max_hops=3, resolver=resolver)
    with pytest.raises(UnsafeUrl, match="https to plain http"):
        await vet_redirect(start, "http://example.com/", hop=1, max_hops=3, resolver=resolver)
    with pytest.raises(UnsafeUrl, match="more than 3 times"):
        await vet_redirect(start, "/again", hop=4, max_hops=3, resolver=resolver)
    with pytest.raises(UnsafeUrl, match="without a location"):
        await vet_redirect(start, " ", hop=1, max_hops=3, resolver=resolver)


def test_the_asyncio_resolver_resolves_off_the_loop() -> None:
    # "localhost" resolves from /etc/hosts: no network needed. Open WebUI's loop is
    # asyncio, the only loop the guard runs on.
    async def check() -> None:
        addresses = await AsyncioResolver().resolve("localhost", 443)
        assert any(a.is_loopback for a in addresses)
        with pytest.raises(UnsafeUrl, match=r"127\.0\.0\.0/8|::1/128"):
            await vet("https://localhost/", resolver=AsyncioResolver())

    asyncio.run(check())


private_v4 = st.one_of(
    st.integers(0x0A000000, 0x0AFFFFFF),
    st.integers(0x7F000000, 0x7FFFFFFF),
    st.integers(0xAC100000, 0xAC1FFFFF),
    st.integers(0xC0A80000, 0xC0A8FFFF),
    st.integers(0xA9FE0000, 0xA9FEFFFF),
    st.integers(0x64400000, 0x647FFFFF),
).map(ipaddress.IPv4Address)

NAT64_LOCAL_USE = 0x0064_FF9B_0001 << 80


def rfc6052_embed(prefix: int, length: int, v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    """RFC 6052 §2.2, octet by octet: the IPv4 octets after the prefix, skipping octet 8 (u)."""
    octets = bytearray(prefix.to_bytes(16, "big"))
    position = length // 8
    for octet in v4.packed:
        if position == 8:
            position += 1
        octets[position] = octet
        position += 1
    return ipaddress.IPv6Address(bytes(octets))


def ipv6_forms(v4: ipaddress.IPv4Address) -> dict[str, ipaddress.IPv6Address]:
    """Every IPv6 form of ``v4`` the guard knows."""
    n = int(v4)
    return {
        "mapped": ipaddress.IPv6Address(0xFFFF00000000 | n),
        "compatible": ipaddress.IPv6Address(n),
        "translated": ipaddress.IPv6Address((0xFFFF << 64) | n),
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | n),
        "nat64b": ipaddress.IPv6Address((0x64FF9B0001 << 80) | n),
        **{
            f"local-use /{length}": rfc6052_embed(NAT64_LOCAL_USE, length, v4)
            for length in (48, 56, 64, 96)
        },
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),
        "teredo client": ipaddress.IPv6Address(
            (0x20010000 << 96) | (0x08080808 << 64) | (~n & 0xFFFFFFFF)
        ),
        "teredo server": ipaddress.IPv6Address((0x20010000 << 96) | (n << 64) | 0xF7F7F7F7),
    }


FORMS = sorted(ipv6_forms(ipaddress.IPv4Address(0)))


@given(private_v4, st.sampled_from(FORMS))
def test_a_private_ipv4_inside_any_ipv6_form_is_refused(
    v4: ipaddress.IPv4Address, form: str
) -> None:
    assert address_problem(ipv6_forms(v4)[form]) is not None


@given(st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address))
def test_an_accepted_address_is_always_a_global_one(v4: ipaddress.IPv4Address) -> None:
    if address_problem(v4) is None:
        assert v4.is_global
    else:
        assert not v4.is_global or any(
            v4 in ipaddress.IPv4Network(n) for n in ("192.88.99.0/24", "100.64.0.0/10")
        )


# -- the registries, entry by entry -------------------------------------------------

ALL_SPECIAL = IPV4_SPECIAL_PURPOSE + IPV6_SPECIAL_PURPOSE


def deciding_entry(address: IPAddress) -> AddressBlock | None:
    """The most specific special-purpose entry holding ``address``: the one that decides."""
    holding = [entry for entry in ALL_SPECIAL if address in entry.network]
    return max(holding, key=lambda entry: entry.network.prefixlen, default=None)


def test_the_tables_are_the_registries() -> None:
    # 25 IPv4 rows, one of them naming two addresses; 25 IPv6 rows.
    assert (len(IPV4_SPECIAL_PURPOSE), len(IPV6_SPECIAL_PURPOSE)) == (26, 25)
    networks = [entry.network for entry in ALL_SPECIAL]
    assert len(set(networks)) == len(networks)
    assert all(entry.network.version == 4 for entry in IPV4_SPECIAL_PURPOSE)
    assert all(entry.network.version == 6 for entry in IPV6_SPECIAL_PURPOSE)
    assert all(entry.name and entry.rfc.startswith("RFC ") for entry in ALL_SPECIAL)
    reachable = {str(e.network) for e in ALL_SPECIAL if e.globally_reachable is True}
    assert reachable == {
        "192.0.0.9/32",
        "192.0.0.10/32",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.175.48.0/24",
        "64:ff9b::/96",
        "2001:1::1/128",
        "2001:1::2/128",
        "2001:1::3/128",
        "2001:3::/32",
        "2001:4:112::/48",
        "2001:20::/28",
        "2001:30::/28",
        "2620:4f:8000::/48",
    }
    unlisted = {str(e.network) for e in ALL_SPECIAL if e.globally_reachable is None}
    assert unlisted == {"192.88.99.0/24", "2001::/32", "2001:10::/28", "2002::/16"}


def test_the_ipv6_address_space_is_covered_exactly_once() -> None:
    blocks = [IPV6_GLOBAL_UNICAST, *IPV6_OUTSIDE_GLOBAL_UNICAST]
    assert sum(block.network.num_addresses for block in blocks) == 2**128
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            assert not a.network.overlaps(b.network), (a.network, b.network)


def decided_by(entry: AddressBlock) -> list[IPAddress]:
    """A few addresses (ends and middle) whose deciding entry is ``entry``."""
    network = entry.network
    middle = network.network_address + network.num_addresses // 2
    picks = dict.fromkeys([network.network_address, middle, network.broadcast_address])
    return [a for a in picks if deciding_entry(a) is entry]


NOT_REACHABLE = [e for e in ALL_SPECIAL if e.globally_reachable is not True]


@pytest.mark.parametrize("entry", NOT_REACHABLE, ids=lambda e: str(e.network))
async def test_every_entry_not_globally_reachable_is_refused(entry: AddressBlock) -> None:
    addresses = decided_by(entry)
    if entry.network in CARRIERS_NOT_LISTED:  # refused only for what they carry
        addresses = [
            a
            for a in addresses
            if isinstance(a, ipaddress.IPv6Address) and any(map(address_problem, carried(a)))
        ]
    assert addresses, f"no address of {entry.network} is decided by it"
    for address in addresses:
        literal = f"[{address}]" if address.version == 6 else str(address)
        with pytest.raises(UnsafeUrl) as refused:
            await vet(f"https://{literal}/", resolver=resolver)
        reason = refused.value.reason
        # Named by the entry, or by the non-public IPv4 address the form carries.
        assert str(entry.network) in reason or "carries the IPv4 address" in reason, reason
        assert "only public addresses" in reason


GLOBALLY_REACHABLE_SPECIALS = [
    "192.0.0.9",  # PCP anycast, inside the unreachable 192.0.0.0/24
    "192.0.0.10",  # TURN anycast
    "192.31.196.1",  # AS112-v4
    "192.52.193.1",  # AMT
    "192.175.48.6",  # AS112 direct delegation
    "64:ff9b::8.8.8.8",  # well-known NAT64 of a public address
    "2001:1::1",
    "2001:1::2",
    "2001:1::3",
    "2001:3::1",  # AMT
    "2001:4:112::1",  # AS112-v6
    "2001:20::1",  # ORCHIDv2
    "2001:30::1",  # DETs
    "2620:4f:8000::6",  # AS112 direct delegation
]


def test_every_globally_reachable_entry_has_a_passing_case() -> None:
    covered = {deciding_entry(ipaddress.ip_address(a)) for a in GLOBALLY_REACHABLE_SPECIALS}
    assert covered == {e for e in ALL_SPECIAL if e.globally_reachable is True}


@pytest.mark.parametrize(
    "address",
    [
        *GLOBALLY_REACHABLE_SPECIALS,
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2002:808:808::1",  # 6to4 of a public address
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: public server, client 8.8.8.8
        "3ffe::1",  # next to 3fff::/20: global unicast, if unallocated
        "3fff:1000::1",  # just past 3fff::/20
    ],
)
async def test_globally_reachable_addresses_pass(address: str) -> None:
    parsed = ipaddress.ip_address(address)
    assert address_problem(parsed) is None
    literal = f"[{address}]" if parsed.version == 6 else address
    vetted = await vet(f"https://{literal}/", resolver=resolver)
    assert vetted.addresses == (parsed,)


def test_the_messages_say_what_and_why() -> None:
    assert address_problem(ipaddress.ip_address("10.1.2.3")) == (
        "is in 10.0.0.0/8 (private use, RFC 1918), which IANA lists as not globally reachable"
    )
    assert address_problem(ipaddress.ip_address("192.0.0.8")) == (
        "is in 192.0.0.8/32 (IPv4 dummy address, RFC 7600), which IANA lists as not "
        "globally reachable (within 192.0.0.0/24: IETF protocol assignments, RFC 6890 §2.1)"
    )
    assert address_problem(ipaddress.ip_address("2002:a00:1::")) == (
        "carries the IPv4 address 10.0.0.1 (6to4, 2002::/16), and 10.0.0.1 is in "
        "10.0.0.0/8 (private use, RFC 1918), which IANA lists as not globally reachable"
    )
    assert address_problem(ipaddress.ip_address("fe00::1")) == (
        "is in fe00::/9 (reserved by the IETF, RFC 4291), outside 2000::/3, the only IPv6 "
        "space allocated for global unicast"
    )
    assert "IANA does not list" in str(address_problem(ipaddress.ip_address("192.88.99.1")))


# -- RFC 6052 layouts ---------------------------------------------------------------

# RFC 6052 §2.4: 192.0.2.33 after each network-specific prefix.
RFC6052_EXAMPLES = [
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
]


@pytest.mark.parametrize(("prefix", "embedded"), RFC6052_EXAMPLES)
def test_rfc6052_examples_decode(prefix: str, embedded: str) -> None:
    network = ipaddress.IPv6Network(prefix)
    address = ipaddress.IPv6Address(embedded)
    assert rfc6052_ipv4(address, network.prefixlen) == ipaddress.IPv4Address("192.0.2.33")
    v4 = ipaddress.IPv4Address("192.0.2.33")
    assert rfc6052_embed(int(network.network_address), network.prefixlen, v4) == address


def test_rfc6052_knows_only_its_six_lengths() -> None:
    with pytest.raises(ValueError, match="no /80 layout"):
        rfc6052_ipv4(ipaddress.IPv6Address("64:ff9b::1"), 80)


@given(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.sampled_from([32, 40, 48, 56, 64, 96]),
    st.integers(0, 2**128 - 1),
)
def test_rfc6052_round_trips(v4: ipaddress.IPv4Address, length: int, prefix: int) -> None:
    prefix &= ~((1 << (128 - length)) - 1)  # only the prefix bits
    assert rfc6052_ipv4(rfc6052_embed(prefix, length, v4), length) == v4


@pytest.mark.parametrize("length", [48, 56, 64, 96])
@pytest.mark.parametrize("v4", ["127.0.0.1", "169.254.169.254", "10.20.30.40"])
def test_local_use_nat64_names_what_it_carries_in_every_layout(v4: str, length: int) -> None:
    address = rfc6052_embed(NAT64_LOCAL_USE, length, ipaddress.IPv4Address(v4))
    problem = address_problem(address)
    assert problem is not None
    assert problem.startswith(f"carries the IPv4 address {v4} (local-use NAT64")


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address), st.sampled_from([48, 56, 64, 96]))
def test_local_use_nat64_is_refused_whatever_it_carries(
    v4: ipaddress.IPv4Address, length: int
) -> None:
    assert address_problem(rfc6052_embed(NAT64_LOCAL_USE, length, v4)) is not None


# -- properties: what is accepted is never in a non-global entry --------------------


def in_and_around(block: AddressBlock) -> st.SearchStrategy[IPAddress]:
    """Any address of ``block``, or one just outside either end."""
    network = block.network
    first = max(int(network.network_address) - 1, 0)
    last = min(int(network.broadcast_address) + 1, 2**network.max_prefixlen - 1)
    if network.version == 4:
        return st.integers(first, last).map(ipaddress.IPv4Address)
    return st.integers(first, last).map(ipaddress.IPv6Address)


special_or_any = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
    st.sampled_from(ALL_SPECIAL + IPV6_OUTSIDE_GLOBAL_UNICAST + (IPV4_MULTICAST,)).flatmap(
        in_and_around
    ),
    st.builds(lambda v4, form: ipv6_forms(v4)[form], private_v4, st.sampled_from(FORMS)),
    st.builds(
        lambda v4, form: ipv6_forms(v4)[form],
        st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
        st.sampled_from(FORMS),
    ),
)

CARRIERS_NOT_LISTED = {ipaddress.ip_network("2001::/32"), ipaddress.ip_network("2002::/16")}


def carried(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if address.sixtofour is not None:
        return [address.sixtofour]
    assert address.teredo is not None
    return list(address.teredo)


@given(special_or_any)
def test_an_accepted_address_is_outside_every_non_global_entry(address: IPAddress) -> None:
    if address_problem(address) is not None:
        return
    entry = deciding_entry(address)
    if entry is not None and entry.network in CARRIERS_NOT_LISTED:
        # "N/A" in the registry: accepted only when everything it carries is.
        assert isinstance(address, ipaddress.IPv6Address)
        assert all(address_problem(v4) is None for v4 in carried(address))
    else:
        # No entry holds it, or the most specific one says globally reachable.
        assert entry is None or entry.globally_reachable is True
        if entry is not None:  # a non-global entry may hold it only around the deciding one
            for other in ALL_SPECIAL:
                if address in other.network and other.globally_reachable is not True:
                    assert other.network.prefixlen < entry.network.prefixlen
    if address.version == 4:
        assert address not in IPV4_MULTICAST.network
    else:
        assert address in IPV6_GLOBAL_UNICAST.network or address in ipaddress.ip_network(
            "64:ff9b::/96"
        )


@given(special_or_any)
def test_an_address_in_a_non_global_entry_is_refused(address: IPAddress) -> None:
    entry = deciding_entry(address)
    if entry is None or entry.globally_reachable is True:
        return
    if entry.network in CARRIERS_NOT_LISTED:
        assert isinstance(address, ipaddress.IPv6Address)
        if all(address_problem(v4) is None for v4 in carried(address)):
            return
    assert address_problem(address) is not None
