"""The one check on every URL the service calls on a tenant's behalf (webhooks, remote
models): no server-side request forgery into the hospital network.

A URL passes when it is ``http`` or ``https``, names a host, carries no credentials (and,
for remote models, no query or fragment), its host matches one of the allow-list's
patterns (``fnmatch``: ``*.hospital.org`` needs a label before the domain), and — unless the
operator allows private networks — every address the host resolves to is public: not
loopback, private, link-local (cloud metadata at 169.254.169.254), multicast or reserved.
Callers check again before each call, since DNS may change after registration.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from models.errors import InvalidParametersError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class OutboundRule:
    """What a kind of URL may be: ``kind`` names it in messages (``"webhook"``), the
    settings in the hints."""

    kind: str
    allowed_hosts: Sequence[str]
    allow_private: bool
    hosts_setting: str
    private_setting: str
    allow_query: bool = True


def check_outbound_url(url: str, rule: OutboundRule, *, resolve: bool = True) -> SplitResult:
    """The parsed URL, or :class:`InvalidParametersError` (422) saying which rule it broke."""
    what = f"a {rule.kind}'s URL"
    if len(url) > 2048:
        raise InvalidParametersError(f"{what}: at most 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidParametersError(f"{what} must be http:// or https://")
    if parts.username or parts.password:
        raise InvalidParametersError(f"{what} must not carry credentials")
    if not rule.allow_query and (parts.query or parts.fragment):
        raise InvalidParametersError(f"{what} must not have a query or fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidParametersError(f"{what} names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidParametersError(f"{what} has an invalid port") from exc
    if not any(fnmatch.fnmatchcase(host, p.lower()) for p in rule.allowed_hosts):
        raise InvalidParametersError(
            f"host {host!r} is not on the {rule.kind} allow-list ({rule.hosts_setting})",
            {"host": host})
    if resolve and not rule.allow_private:
        for address in resolved(host, port):
            if not address.is_global or address.is_multicast:
                raise InvalidParametersError(
                    f"host {host!r} resolves to a non-public address, which this service "
                    f"does not call ({rule.private_setting} allows it)", {"host": host})
    return parts


def resolved(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (a 422 when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidParametersError(f"host {host!r} does not resolve") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
