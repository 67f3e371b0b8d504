"""``sealkeep serve``: the HSM-side service, its API and admin portal.

``sealkeep serve init --state DIR --admin NAME`` makes the state folder and the first admin;
``sealkeep serve --state DIR`` runs the service (HTTPS, a certificate made at first start).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from ..errors import EXIT_USAGE, SealkeepError
from ..pins import InputError, ask_new_password, read_password_file
from . import add_drives_option
from .slots import add_module_option

ORDER = 60
DEFAULT_PORT = 8443
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
"""The host names a service on a loopback address answers to (against DNS rebinding)."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
"""The host names a service on a loopback address answers to (against DNS rebinding)."""


class ServeUsage(SealkeepError):
    exit_code = EXIT_USAGE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the service: JSON API and admin portal over HTTPS (`serve init` first)",
        description=(
            "Run the HSM-side service: a JSON API under /api/v1 and the admin portal, both "
            "over the same service layer (management users and roles, the IP allowlist, the "
            "audit log, backup and restore jobs). HTTPS with a certificate made at first start "
            "unless --cert/--key are given; plain HTTP only on a loopback address with --http. "
            "State lives in --state DIR (SQLite, the audit key, the certificate), which "
            "`sealkeep serve init` makes."
        ),
    )
    # Not required here: `serve init` takes its own --state, which this parser never sees.
    p.add_argument("--state", metavar="DIR", help="the service's state folder (required)")
    p.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"where to listen (default 127.0.0.1:{DEFAULT_PORT}; port 0 picks a free one)",
    )
    p.add_argument("--http", action="store_true", help="plain HTTP (only on a loopback address)")
    p.add_argument("--cert", metavar="PEM", help="the HTTPS certificate (with --key)")
    p.add_argument("--key", metavar="PEM", help="the certificate's private key")
    add_drives_option(p)
    add_module_option(p)
    p.set_defaults(run=run)
    sub = p.add_subparsers(title="setup", dest="serve_action", metavar="ACTION")
    init = sub.add_parser(
        "init",
        help="make the state folder and the first admin (who holds every role)",
        description=(
            "Create the state folder (0700), its database, the audit signing key and the first "
            "management user, who holds every role (admin, operator, auditor). The IP "
            "allowlist starts as this machine only (127.0.0.0/8, ::1) plus each --allow."
        ),
    )
    init.add_argument("--state", required=True, metavar="DIR", help="the state folder to make")
    init.add_argument("--admin", required=True, metavar="NAME", help="the first admin's name")
    init.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the admin's password from the first line of FILE (else asked twice)",
    )
    init.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="also allow requests from this address range (repeat for several)",
    )
    init.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    from ..service import db
    from ..service.audit import AuditLog, ServiceKey
    from ..service.core import allowlist, users
    from ..service.settings import DB_NAME

    state = Path(args.state)
    if (state / DB_NAME).exists():
        conn = db.connect(state / DB_NAME)
        try:
            if users.list_users(conn):
                raise InputError(
                    f"{state} is already set up: add users in the portal or the API, not "
                    "with init (nothing was changed)"
                )
        finally:
            conn.close()
    if args.password_file:
        password = read_password_file(args.password_file)
    else:
        password = ask_new_password(f"admin {args.admin!r}")
    users.check_password(password)
    allowlist.parse(args.allow)
    db.initialise(state / DB_NAME)
    key = ServiceKey.load_or_create(state)
    conn = db.connect(state / DB_NAME)
    try:
        audit = AuditLog(conn, key)
        audit.append("service.init", actor=None, address=None, target=str(state))
        users.create_user(
            conn,
            audit,
            args.admin,
            password,
            [r.value for r in users.Role],
            actor=None,
            address=None,
        )
        allowlist.replace(
            conn,
            audit,
            [*allowlist.DEFAULT, *args.allow],
            actor=args.admin,
            address="127.0.0.1",
        )
        conn.commit()
    finally:
        conn.close()
    print(f"state folder {state} ready; admin {args.admin!r} holds every role")
    print(f"start the service: sealkeep serve --state {state} --drives SPEC")
    print(f"then open https://127.0.0.1:{DEFAULT_PORT}/ and log in as {args.admin}")
    return 0


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ServeUsage(f"--listen takes HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), not {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..service.app import create_app
    from ..service.settings import DB_NAME, Settings
    from ..service.tls import ensure_certificate, fingerprint

    if not args.state:
        raise ServeUsage("give the state folder with --state DIR")
    state = Path(args.state)
    if not (state / DB_NAME).exists():
        raise InputError(
            f"{state} is not a sealkeep state folder: make it with `sealkeep serve init "
            f"--state {state} --admin NAME`"
        )
    host, port = parse_listen(args.listen)
    if args.http and not is_loopback(host):
        raise ServeUsage(
            f"plain HTTP only on a loopback address, not {host}: passwords and SO passwords "
            "would cross the network in clear; drop --http"
        )
    if bool(args.cert) != bool(args.key):
        raise ServeUsage("give --cert and --key together")
    settings = Settings(state=state, module=args.module, drives=args.drives, https=not args.http)
    if is_loopback(host) and "SEALKEEP_ALLOWED_HOSTS" not in os.environ:
        settings = settings.model_copy(update={"allowed_hosts": LOOPBACK_NAMES})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeUsage(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Listening before the URL is printed: a client that reads it and connects at once
    # waits in the backlog until the service accepts, rather than being refused.
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    ssl: dict[str, str] = {}
    if settings.https:
        if args.cert:
            cert, key = Path(args.cert), Path(args.key)
        else:
            cert, key = ensure_certificate(state, host)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        print(f"sealkeep serve: https://{shown}:{port}/", flush=True)
        print(f"certificate SHA-256 {fingerprint(cert)}", flush=True)
    else:
        print(f"sealkeep serve: http://{shown}:{port}/", flush=True)
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        **ssl,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    sys.stdout.flush()
    return 0
