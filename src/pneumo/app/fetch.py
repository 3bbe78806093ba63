"""Fetch an image from a URL without opening a door into the clinic network (SSRF).

Only http(s); every hop's host is resolved and *all* its addresses must be public (no loopback,
private, link-local, shared, reserved or multicast address); the connection then goes to the
addresses that were checked, in the resolver's order, and the name is never resolved again, so a
DNS answer that changes between check and connect (rebinding) cannot slip through. Redirects
are followed by hand, at most ``max_redirects``, each re-checked. The body is streamed with a
size cap and an overall deadline; the content type must be an image.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pneumo import limits
from pneumo.data.decode import mib
from pneumo.errors import PneumoError

log = logging.getLogger(__name__)

ALLOWED_TYPES = ("image/", "application/dicom")
"""Content types accepted (prefixes); anything else is refused before the body is read."""


class FetchError(PneumoError):
    """The URL was refused or could not be fetched; the message says why in plain words."""


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for fetching an image URL."""

    timeout_s: float = 10.0
    """Deadline for the whole fetch, redirects included (seconds)."""
    max_bytes: int = int(limits.MAX_UPLOAD_MIB * limits.MiB)
    """Largest body accepted (the upload limit); larger downloads are cut off and refused."""
    max_redirects: int = 3
    """Redirects followed at most."""
    allow_loopback: bool = False
    """TEST ONLY: let 127.0.0.1 / ::1 through so tests can use a local server. Private,
    link-local and other non-public addresses stay refused."""

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        if not 0 <= self.max_redirects <= 10:
            raise ValueError("max_redirects must be in 0..10")


@dataclass(frozen=True)
class Fetched:
    """A downloaded body with where it finally came from."""

    url: str
    data: bytes
    content_type: str
    name: str
    """A file name for the records: the last path segment, or the host."""


_NAT64 = (
    ipaddress.ip_network("64:ff9b::/96"),  # the well-known NAT64 prefix (RFC 6052)
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and may be routed to: IPv4-mapped and
    -compatible, 6to4 (2002::/16), Teredo (2001::/32: server and client) and NAT64."""
    found = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    if any(addr in net for net in _NAT64) or (addr in _IPV4_COMPATIBLE and int(addr) > 1):
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def _refuse_unless_public(addr, policy: FetchPolicy, shown: str) -> None:
    if addr.is_loopback and policy.allow_loopback:
        return
    if not addr.is_global or addr.is_multicast or addr.is_reserved or addr.is_unspecified:
        kind = (
            "loopback"
            if addr.is_loopback
            else "link-local"
            if addr.is_link_local
            else "multicast"
            if addr.is_multicast
            else "private"
            if addr.is_private
            else "reserved or non-public"
        )
        raise FetchError(f"refused: {shown} is a {kind} address; only public hosts can be fetched")


def check_address(ip: str, policy: FetchPolicy) -> None:
    """Refuse any address that is not plainly public, and any IPv6 address whose embedded IPv4
    address (mapped, 6to4, Teredo, NAT64) is not: each form can reach that IPv4 host."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        raise FetchError(f"refused: {ip!r} is not an IP address") from None
    if isinstance(addr, ipaddress.IPv6Address):
        inner = embedded_ipv4(addr)
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for v4 in inner:
            _refuse_unless_public(v4, policy, f"{v4} (inside {ip})")
    _refuse_unless_public(addr, policy, str(addr))


def resolve(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Resolve ``host`` once and check every address it has: any address that is not public
    refuses the host. Returns the checked addresses, the only ones it may be connected to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}")
    for ip in addresses:
        check_address(ip, policy)
    return addresses


def _connect(ips: list[str], port: int, timeout: float | None) -> socket.socket:
    """A socket to the first of the checked ``ips`` that answers, in the resolver's order (an
    IPv6 address first on an IPv4-only network fails at once, then IPv4 is tried), as
    ``socket.create_connection`` does for a name, but never resolving the name again."""
    failure: OSError | None = None
    for ip in ips:
        try:
            return socket.create_connection((ip, port), timeout)
        except TimeoutError:
            raise
        except OSError as exc:
            failure = exc
    raise failure or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a checked address while keeping the URL's host in the Host header."""

    def __init__(self, host, port, ips, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ips = ips

    def connect(self):
        self.sock = _connect(self._ips, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked address; the certificate is verified against the URL's host name."""

    def __init__(self, host, port, ips, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ips = ips

    def connect(self):
        sock = _connect(self._ips, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url.strip())
        parts.hostname  # noqa: B018 - raises for a malformed IPv6 literal
    except ValueError as exc:
        raise FetchError(f"refused: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = scheme + "://" if scheme else "a URL without http:// or https://"
        raise FetchError(f"refused: only http:// and https:// URLs can be fetched, not {shown}")
    if parts.username or parts.password:
        raise FetchError("refused: URLs with a user name or password are not fetched")
    host = parts.hostname
    if not host:
        raise FetchError("refused: the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchError("refused: the URL has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, path


def _name_from(url: str) -> str:
    parts = urlsplit(url)
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return last or parts.hostname or "download"


def fetch_image(url: str, policy: FetchPolicy | None = None) -> Fetched:
    """Download an image from ``url`` under ``policy``; raises FetchError with the reason."""
    policy = policy or FetchPolicy()
    deadline = time.monotonic() + policy.timeout_s
    current = url.strip()
    for hop in range(policy.max_redirects + 1):
        scheme, host, port, path = _split(current)
        ips = resolve(host, port, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"timed out after {policy.timeout_s:g} s")
        cls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        conn = cls(host, port, ips, timeout=remaining)
        try:
            try:
                conn.request("GET", path, headers={"User-Agent": "pneumo", "Accept": "image/*"})
                resp = conn.getresponse()
            except TimeoutError:
                raise FetchError(f"timed out after {policy.timeout_s:g} s") from None
            except ssl.SSLError as exc:
                raise FetchError(f"TLS error talking to {host} ({exc.reason})") from None
            except OSError as exc:
                raise FetchError(f"cannot connect to {host} ({exc.strerror or exc})") from None
            except http.client.HTTPException as exc:
                raise FetchError(f"bad HTTP response from {host} ({exc})") from None
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"redirect without a Location from {host}")
                current = urljoin(current, location)
                log.debug("redirect %d -> hop %d", resp.status, hop + 1)
                continue
            if resp.status != 200:
                raise FetchError(f"the server answered HTTP {resp.status} {resp.reason}")
            content_type = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if not content_type.startswith(ALLOWED_TYPES):
                raise FetchError(
                    f"not an image: the server says the content type is "
                    f"{content_type or 'missing'} (expected image/* or application/dicom)"
                )
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise FetchError(_too_large(int(length), policy))
            data = _read_capped(resp, policy, deadline)
            return Fetched(current, data, content_type, _name_from(current))
        finally:
            conn.close()
    raise FetchError(f"too many redirects (more than {policy.max_redirects})")


def _too_large(size: int, policy: FetchPolicy) -> str:
    return f"too large: {mib(size)}, over the {mib(policy.max_bytes)} limit"


def _read_capped(resp, policy: FetchPolicy, deadline: float) -> bytes:
    chunks, total = [], 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError(f"timed out after {policy.timeout_s:g} s")
        try:
            chunk = resp.read(64 * 1024)
        except TimeoutError:
            raise FetchError(f"timed out after {policy.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"download interrupted ({exc})") from None
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise FetchError(f"too large: over the {mib(policy.max_bytes)} limit")
        chunks.append(chunk)
    if not total:
        raise FetchError("the server sent an empty body")
    return b"".join(chunks)
