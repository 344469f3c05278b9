"""`bosun metrics`: the Prometheus exporter on a port of its own (or printed once)."""

from __future__ import annotations

import sys
import threading


def _db_url() -> str:
    from orchestration.core import settings

    return settings.database_url()


def cmd_metrics(args) -> int:
    from orchestration.verification.prometheus import exposition, registry_for

    if args.print:
        sys.stdout.write(exposition(_db_url()).decode())
        return 0
    from prometheus_client import start_http_server

    server, _thread = start_http_server(args.port, addr=args.host, registry=registry_for(_db_url()))
    print(f"bosun metrics on http://{args.host}:{server.server_port}/metrics", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()  # the server thread answers scrapes; stop with SIGTERM or Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def add_commands(subparsers) -> None:
    s = subparsers.add_parser("metrics", help="Prometheus metrics read from Bosun's database on every scrape")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9464)
    s.add_argument("--print", action="store_true", help="print the metrics once and exit")
    s.set_defaults(func=cmd_metrics)
