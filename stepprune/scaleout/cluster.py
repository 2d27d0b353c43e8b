"""Connecting to Ray: a reachable cluster, or a one-line error before any work starts."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class RayMissingError(ValueError):
    """--executor ray without Ray installed: a one-line CLI error like any bad option."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayMissingError("--executor ray needs Ray: pip install 'stepprune[ray]'") from e
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address whose host:port does not accept a connection (ray.init would retry
    for a minute and then print a page). ``auto`` and ``local`` are Ray's own words."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"ray address {address!r}: expected host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"cannot reach a Ray cluster at {address}: {e}") from None


def connect(address: str | None):
    """The ``ray`` module, initialised: the running Ray if there is one, else ``address``
    (or ``$RAY_ADDRESS``), else a Ray started in this process."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    # Without an address Ray joins a cluster started on this machine, else starts one.
    ray.init(address=address, include_dashboard=False)
    resources = ray.cluster_resources()
    log.info("Ray: %s CPUs, %s GPUs", resources.get("CPU", 0), resources.get("GPU", 0))
    return ray


def connect_first(opts) -> None:
    """For ``--executor ray``: connect before any other work, so a bad address costs nothing."""
    if opts.executor == "ray":
        connect(opts.ray_address)
