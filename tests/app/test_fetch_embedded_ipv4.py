"""The URL guard checks the IPv4 address inside IPv6 forms that carry one (issue 10, defect 11):
each of these reaches the IPv4 host through a gateway or the local stack."""

from __future__ import annotations

import ipaddress

import pytest

from pneumo.app.fetch import FetchError, FetchPolicy, check_address, embedded_ipv4, fetch_image

INTERNAL_V4 = ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]


def _forms(v4: str) -> dict[str, str]:
    n = int(ipaddress.IPv4Address(v4))
    hi, lo = n >> 16, n & 0xFFFF
    teredo_client = n ^ 0xFFFFFFFF  # Teredo stores the client address inverted
    return {
        "mapped": f"::ffff:{v4}",
        "compatible": f"::{v4}",
        "6to4": f"2002:{hi:x}:{lo:x}::1",
        "nat64": f"64:ff9b::{v4}",
        "nat64-local": f"64:ff9b:1::{hi:x}:{lo:x}",
        "teredo-client": f"2001:0:4136:e378:8000:63bf:{teredo_client >> 16:x}:{teredo_client & 0xFFFF:x}",
        "teredo-server": f"2001:0:{hi:x}:{lo:x}::1",
    }


CASES = [
    pytest.param(addr, v4, id=f"{kind}-{v4}")
    for v4 in INTERNAL_V4
    for kind, addr in _forms(v4).items()
]


@pytest.mark.parametrize(("addr", "v4"), CASES)
def test_ipv6_forms_of_internal_ipv4_are_refused(addr, v4):
    ip6 = ipaddress.IPv6Address(addr)
    if not ip6.is_unspecified:  # ::0.0.0.0 is just ::
        assert ipaddress.IPv4Address(v4) in embedded_ipv4(ip6)
    with pytest.raises(FetchError, match="refused"):
        check_address(addr, FetchPolicy())


@pytest.mark.parametrize("kind", ["mapped", "6to4", "nat64"])
def test_literal_urls_are_refused_before_connecting(kind):
    addr = _forms("127.0.0.1")[kind]
    with pytest.raises(FetchError, match="refused"):
        fetch_image(f"http://[{addr}]/x.png")


def test_the_6to4_sample_from_the_campaign():
    with pytest.raises(FetchError, match=r"127\.0\.0\.1 \(inside 2002:7f00:1::\)"):
        check_address("2002:7f00:1::", FetchPolicy())


def test_plain_public_ipv6_passes():
    check_address("2606:4700:4700::1111", FetchPolicy())  # public, embeds nothing
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700:4700::1111")) == []


def test_garbage_address_is_refused():
    with pytest.raises(FetchError, match="not an IP address"):
        check_address("not-an-ip", FetchPolicy())


@pytest.mark.parametrize(
    "url", ["http://[::1/", "http://[zz::1]/", "http://[::1]]/", "http://[1.2.3.4]/"]
)
def test_malformed_urls_are_refused_not_raised(url):
    with pytest.raises(FetchError, match="refused"):
        fetch_image(url)


def test_app_reports_malformed_urls_as_an_item_error():
    from pneumo.app.intake import read_url
    from pneumo.app.settings import AppSettings

    item = read_url("http://[::1/", AppSettings())
    assert item.data is None and "not a valid URL" in item.error
