"""`bosun db`: the schema migrations of every database the code location uses.

`upgrade` brings each schema (Bosun's tables, the ERP's, the outbox's) to its head in the
database it lives in, as every process does on start; `--sql` prints the SQL for a DBA
instead. `current` shows each database's revision against the head. `revision` and
`check` are for whoever changes a table: orchestration/README.md, "Schema migrations".
"""

from __future__ import annotations

import json
import sys


def _databases(only: str | None):
    from orchestration.definitions import schema_databases

    found = [(owner, url) for owner, url in schema_databases() if only in (None, owner.name)]
    if not found:
        raise SystemExit(f"bosun db: no schema {only!r} in this code location")
    return found


def _owner(name: str):
    from orchestration.definitions import schema_owners

    for owner in schema_owners:
        if owner.name == name:
            return owner
    raise SystemExit(f"bosun db: no schema {name!r}; known: {', '.join(o.name for o in schema_owners)}")


def cmd_upgrade(args) -> int:
    from orchestration.core import db, schema_migrations
    from orchestration.core.settings import redact_url

    for owner, url in _databases(args.schema):
        if args.sql:
            print(f"-- schema {owner.name} (version table {owner.version_table}), for {redact_url(url)}")
            schema_migrations.upgrade_sql(owner, url, sys.stdout)
            continue
        try:
            before, after = schema_migrations.upgrade(db.unmigrated_engine(url), owner)
        except schema_migrations.SchemaMismatch as err:
            print(f"{owner.name}: {err}", file=sys.stderr)
            return 1
        change = "up to date" if before == after else f"{','.join(before) or 'empty'} -> {','.join(after)}"
        print(f"{owner.name:<8} {','.join(after):<6} {change:<18} {redact_url(url)}")
    return 0


def cmd_current(args) -> int:
    from orchestration.core import db, schema_migrations
    from orchestration.core.settings import redact_url

    rows = []
    for owner, url in _databases(args.schema):
        revision = schema_migrations.current(db.unmigrated_engine(url), owner)
        latest = schema_migrations.head(owner)
        rows.append(
            {
                "schema": owner.name,
                "database": redact_url(url),
                "current": ",".join(revision) or None,
                "head": latest,
                "up_to_date": revision == (latest,),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = "up to date" if r["up_to_date"] else "behind: bosun db upgrade"
            print(f"{r['schema']:<8} {r['current'] or 'none':<6} head {r['head']:<6} {state:<26} {r['database']}")
    return 0


def cmd_revision(args) -> int:
    from orchestration.core import schema_migrations

    path = schema_migrations.new_revision(_owner(args.schema), args.message, autogenerate=not args.empty)
    print(f"wrote {path}: read it, add data moves if any, and commit it with the table change")
    return 0


def cmd_check(args) -> int:
    from orchestration.core import schema_migrations
    from orchestration.definitions import schema_owners

    failed = False
    for owner in schema_owners:
        if args.schema not in (None, owner.name):
            continue
        diffs = schema_migrations.differences(owner)
        print(f"{owner.name:<14} {'agrees with its head' if not diffs else 'differs from its head:'}")
        for diff in diffs:
            print(f"    {diff}")
        failed |= bool(diffs)
    if failed:
        print("a table changed without a migration: `bosun db revision --schema NAME -m 'what changed'`")
    return 1 if failed else 0


def add_commands(subparsers) -> None:
    s = subparsers.add_parser("db", help="schema migrations of Bosun's and the targets' databases")
    sub = s.add_subparsers(dest="db_command", required=True)
    up = sub.add_parser("upgrade", help="bring every schema to its head (every process does this on start)")
    up.add_argument("--sql", action="store_true", help="print the SQL for an empty database instead")
    up.add_argument("--schema", help="only this schema (bosun, erp, outbox)")
    up.set_defaults(func=cmd_upgrade)
    cur = sub.add_parser("current", help="each database's revision against the head")
    cur.add_argument("--schema")
    cur.add_argument("--json", action="store_true")
    cur.set_defaults(func=cmd_current)
    rev = sub.add_parser("revision", help="write the next revision file from the table definitions (developers)")
    rev.add_argument("-m", "--message", required=True, help="what changed, e.g. 'inbox: add priority'")
    rev.add_argument("--schema", default="bosun")
    rev.add_argument("--empty", action="store_true", help="no autogenerate: an empty revision to fill in by hand")
    rev.set_defaults(func=cmd_revision)
    chk = sub.add_parser("check", help="exit 1 when a table definition differs from its migrations' head")
    chk.add_argument("--schema")
    chk.set_defaults(func=cmd_check)
