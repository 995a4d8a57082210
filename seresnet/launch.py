"""torchrun for one machine with every listening socket on the loopback interface.

``python -m seresnet.launch --nproc_per_node 2 -m seresnet.train --model se_resnet56 --data /path/to/cifar10``

takes torchrun's arguments and runs torchrun, with three changes:

* The rendezvous defaults to ``--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:<free port> --local-addr 127.0.0.1``
  (the address the workers are told to connect to). A non-loopback endpoint or address, or more than one node, is
  refused: for several machines use torchrun itself.
* Every TCPStore server the launcher starts listens on a socket bound to the loopback address. torch's TCPStore
  binds its server to all interfaces (``*:<port>``) whatever host it is given (checked with torch 2.14, both the
  libuv and the classic backend), and the c10d rendezvous unpickles state read from that store, so a reachable
  store lets anyone on the network run code in the launcher. The launcher binds the socket itself and hands it to
  TCPStore (its ``master_listen_fd`` argument).
* ``GLOO_SOCKET_IFNAME`` and ``NCCL_SOCKET_IFNAME`` default to the loopback interface, so that the workers' gloo
  (and NCCL bootstrap) sockets bind to it rather than to the address the host name resolves to.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from datetime import timedelta
from typing import Any

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

__all__ = ["LoopbackTCPStore", "loopback_interface", "main"]

_TCPStore = dist.TCPStore


def _loopback_address(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The first address ``host`` resolves to, which must be a loopback address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve the rendezvous host {host!r} ({exc}); seresnet.launch serves only this "
                         "machine: use 127.0.0.1 or localhost") from exc
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and ipaddress.ip_address(sockaddr[0]).is_loopback:
            return family, sockaddr[0]
    raise ValueError(f"{host!r} is not a loopback address ({', '.join(str(i[4][0]) for i in infos)}); "
                     "seresnet.launch serves only this machine: use torchrun for several machines")


class LoopbackTCPStore(_TCPStore):
    """A ``torch.distributed.TCPStore`` whose server (``is_master=True``) listens on the loopback address of
    ``host_name`` only; clients are unchanged."""

    def __init__(self, host_name: str, port: int, world_size: int | None = None, is_master: bool = False,
                 timeout: timedelta = timedelta(seconds=300), wait_for_workers: bool = True,
                 multi_tenant: bool = False, master_listen_fd: int | None = None, use_libuv: bool = True) -> None:
        if is_master and master_listen_fd is None:
            family, address = _loopback_address(host_name, port)
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TCPStore does: quick restarts
                sock.bind((address, port))
                sock.listen(socket.SOMAXCONN)
            except OSError as exc:
                sock.close()
                # a RuntimeError, as TCPStore raises: torchrun's c10d backend then retries as a client
                raise RuntimeError(f"cannot listen on {address}:{port}: {exc}") from exc
            port = sock.getsockname()[1]  # the classic backend wants the bound port, not 0
            master_listen_fd = sock.detach()  # TCPStore owns and closes it from here
        super().__init__(host_name, port, world_size, is_master, timeout, wait_for_workers, multi_tenant,
                         master_listen_fd, use_libuv)


def loopback_interface() -> str:
    """The name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS)."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):  # no if_nameindex on some platforms
        return "lo"
    return next((n for n in ("lo", "lo0") if n in names), next((n for n in names if n.startswith("lo")), "lo"))


def _install_loopback_store() -> None:
    """Make every module of torch.distributed that names TCPStore use ``LoopbackTCPStore``."""
    # imported here so that they exist (and get patched) before torchrun looks the backends up lazily
    import torch.distributed.elastic.rendezvous.c10d_rendezvous_backend  # noqa: F401
    import torch.distributed.elastic.rendezvous.dynamic_rendezvous  # noqa: F401
    import torch.distributed.elastic.rendezvous.static_tcp_rendezvous  # noqa: F401
    import torch.distributed.rendezvous  # noqa: F401
    import torch.distributed.run  # noqa: F401

    for name, module in list(sys.modules.items()):
        if (name == "torch.distributed" or name.startswith("torch.distributed.")) \
                and getattr(module, "TCPStore", None) is _TCPStore:
            module.TCPStore = LoopbackTCPStore


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_args(args: Any) -> Any:
    """torchrun's parsed arguments with the loopback defaults filled in; a ``ValueError`` for other machines."""
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint
    from torch.distributed.run import parse_min_max_nnodes

    if parse_min_max_nnodes(args.nnodes)[1] != 1:
        raise ValueError(f"--nnodes {args.nnodes}: seresnet.launch runs on one machine; use torchrun for several")
    if args.standalone:  # torchrun would pick localhost:0; an explicit address keeps it loopback and IPv4
        args.standalone = False
        args.rdzv_endpoint = ""
    if not args.rdzv_endpoint and not (args.rdzv_backend == "static" and args.master_port is not None):
        args.rdzv_backend = "c10d"
        args.rdzv_endpoint = f"127.0.0.1:{_free_loopback_port()}"
    if args.rdzv_endpoint:  # any backend uses the endpoint when there is one; static falls back to --master-addr
        _loopback_address(parse_rendezvous_endpoint(args.rdzv_endpoint, default_port=0)[0], 0)
    else:
        _loopback_address(args.master_addr, 0)
    if args.local_addr is None:
        args.local_addr = "127.0.0.1"  # torchrun's default is the FQDN, which may resolve to a network address
    _loopback_address(args.local_addr, 0)
    return args


@record  # as torchrun's main: a worker's error and traceback are reported, not just "child failed"
def main(argv: list[str] | None = None) -> None:
    """Run torchrun with ``argv`` (default ``sys.argv[1:]``), every listening socket on the loopback interface."""
    from torch.distributed import run as torchrun

    try:
        args = _loopback_args(torchrun.parse_args(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        raise SystemExit(f"seresnet.launch: {exc}") from None
    lo = loopback_interface()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    _install_loopback_store()
    torchrun.run(args)


if __name__ == "__main__":
    main()
