"""The SSRF guard: hostile URLs refused with their reason, public ones accepted, no network.

Names resolve through ``FakeResolver``; nothing here reaches the internet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ssrf_guard import (
    IPAddress,
    TrioResolver,
    UnsafeUrl,
    address_problem,
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
            answer = answer[min(len(self.lookups), len(answer)) - 1]  # type: ignore[assignment]
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
]


def test_the_corpus_is_large() -> None:
    assert len(HOSTILE) >= 50


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


async def test_the_trio_resolver_resolves_off_the_loop() -> None:
    # "localhost" resolves from /etc/hosts: no network needed.
    addresses = await TrioResolver().resolve("localhost", 443)
    assert any(a.is_loopback for a in addresses)
    with pytest.raises(UnsafeUrl, match=r"127\.0\.0\.0/8|::1/128"):
        await vet("https://localhost/", resolver=TrioResolver())


private_v4 = st.one_of(
    st.integers(0x0A000000, 0x0AFFFFFF),
    st.integers(0x7F000000, 0x7FFFFFFF),
    st.integers(0xAC100000, 0xAC1FFFFF),
    st.integers(0xC0A80000, 0xC0A8FFFF),
    st.integers(0xA9FE0000, 0xA9FEFFFF),
    st.integers(0x64400000, 0x647FFFFF),
).map(ipaddress.IPv4Address)


@given(private_v4, st.sampled_from(["mapped", "compatible", "nat64", "nat64b", "6to4"]))
def test_a_private_ipv4_inside_any_ipv6_form_is_refused(
    v4: ipaddress.IPv4Address, form: str
) -> None:
    n = int(v4)
    v6 = {
        "mapped": ipaddress.IPv6Address(0xFFFF00000000 | n),
        "compatible": ipaddress.IPv6Address(n),
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | n),
        "nat64b": ipaddress.IPv6Address((0x64FF9B0001 << 80) | n),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),
    }[form]
    assert address_problem(v6) is not None


@given(st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address))
def test_an_accepted_address_is_always_a_global_one(v4: ipaddress.IPv4Address) -> None:
    if address_problem(v4) is None:
        assert v4.is_global
    else:
        assert not v4.is_global or any(
            v4 in ipaddress.IPv4Network(n) for n in ("192.88.99.0/24", "100.64.0.0/10")
        )
