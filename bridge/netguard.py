"""Addresses the bridge may be pointed at by a merchant, and addresses WooCommerce will call.

A store URL typed on the settings page makes the bridge send requests there: without a check
the bridge could be turned against its own network (SSRF). Every address the name resolves to
must be public unless the operator allows private ones (local tests).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import ConfigError

# WordPress's wp_safe_remote_request only delivers to these ports (woocommerce.md §1.2).
WORDPRESS_SAFE_PORTS = (80, 443, 8080)


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}") from None
    out = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        out.append(ip)
    return out


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global also leaves out what is neither private nor public, such as the shared address
    # space 100.64.0.0/10, where one cloud serves its instance metadata (100.100.100.200).
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_reserved or ip.is_multicast or ip.is_unspecified)


def check_store_url(url: str, *, allow_private: bool) -> None:
    host = urlsplit(url).hostname or ""
    if not host:
        raise ConfigError("the store address has no host name")
    if allow_private:
        return
    for ip in _addresses(host):
        if not _is_public(ip):
            raise ConfigError(f"{host} resolves to {ip}, a loopback, private or link-local "
                              "address; the bridge only connects to public stores")


def webhook_delivery_problem(public_url: str) -> bool:
    """True when WordPress would refuse to deliver webhooks to the bridge's public URL."""
    parts = urlsplit(public_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port not in WORDPRESS_SAFE_PORTS:
        return True
    try:
        return any(not _is_public(ip) for ip in _addresses(parts.hostname or ""))
    except ConfigError:
        return True
