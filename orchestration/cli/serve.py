"""`bosun serve` (the HTTP trigger) and `bosun apikey` (keys and their scopes)."""

from __future__ import annotations

import json

from orchestration.cli.common import fail
from orchestration.core import settings


def _db_url() -> str:
    return settings.database_url()


def cmd_serve(args) -> int:
    import uvicorn

    from orchestration.api.app import create_app
    from orchestration.definitions import defs, payload_registry, review_workflows
    from orchestration.review.answers import ReviewService, default_holder

    reviews = ReviewService(_db_url(), defs.resources, review_workflows, default_holder("api"))
    app = create_app(
        _db_url(),
        payload_registry,
        metrics=not args.no_metrics,
        reviews=reviews,
        console=not args.no_console,
        **settings.api_limits(),
    )
    # Keys' rate limits are in the database: more processes (or hosts) share each key's allowance.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def cmd_apikey_create(args) -> int:
    from orchestration.api.keys import ApiKeys

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        secret, key = ApiKeys(_db_url()).create(args.name, scopes, args.rate, args.burst)
    except ValueError as exc:
        return fail(f"apikey create: {exc}", 2)
    # The only time the key is shown: it is stored hashed.
    print(
        json.dumps(
            {
                "key": secret,
                "key_id": key.key_id,
                "name": key.name,
                "scopes": sorted(key.scopes),
                "rate_per_s": key.rate_per_s,
                "burst": key.burst,
            },
            indent=2,
        )
    )
    return 0


def cmd_apikey_list(args) -> int:
    from orchestration.api.keys import ApiKeys

    print(json.dumps(ApiKeys(_db_url()).list(), indent=2, default=str))
    return 0


def cmd_apikey_revoke(args) -> int:
    from orchestration.api.keys import ApiKeys

    ok = ApiKeys(_db_url()).revoke(args.key_id)
    print(json.dumps({"revoked": args.key_id if ok else None}))
    return 0 if ok else fail(f"apikey revoke: no active key {args.key_id}")


def add_commands(subparsers) -> None:
    s = subparsers.add_parser("serve", help="the HTTP API: events in and out, reviews, the reviewer console")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--log-level", default="warning")
    s.add_argument(
        "--no-metrics",
        action="store_true",
        help="no GET /metrics here (it needs no key); scrape `bosun metrics --port` instead",
    )
    s.add_argument("--no-console", action="store_true", help="no reviewer console at /console")
    s.set_defaults(func=cmd_serve)

    k = subparsers.add_parser("apikey", help="API keys for `bosun serve`")
    ksub = k.add_subparsers(dest="apikey_command", required=True)
    c = ksub.add_parser("create", help="create a key (printed once; stored hashed)")
    c.add_argument("--name", required=True)
    c.add_argument(
        "--scopes", required=True, help="comma-separated: events:write, events:read, reviews:read, reviews:write, admin"
    )
    c.add_argument("--rate", type=float, default=20.0, help="requests per second (token bucket refill)")
    c.add_argument("--burst", type=int, default=40, help="token bucket size")
    c.set_defaults(func=cmd_apikey_create)
    ls = ksub.add_parser("list", help="keys without their secrets")
    ls.set_defaults(func=cmd_apikey_list)
    r = ksub.add_parser("revoke")
    r.add_argument("key_id")
    r.set_defaults(func=cmd_apikey_revoke)
