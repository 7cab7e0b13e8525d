"""`foxreviews`: the operator's command for what Dagster's own CLI does not cover.

    foxreviews check              validate the configuration, print it (secrets hidden)
    foxreviews db status|start|stop|url
                                  the embedded PostgreSQL server
    foxreviews instance [--env-file F]
                                  prepare the Dagster instance ($FOXREVIEWS_HOME/dagster) and
                                  record DAGSTER_HOME in .env for every Dagster command
    foxreviews run-day [--date D] the main job: once the source has published the day (asked
                                  every 20 min, for up to 8 h), reference data, one SIRENE
                                  day end to end, ville_stats; prints a summary
    foxreviews changes --since ID [--entity E] [--limit N] [--json]
                                  the change feed after change ID, in feed order
                                  (docs/change-feed.md); --json: one object per line
"""

from __future__ import annotations

import argparse
import sys

from foxreviews_pipeline.lib.settings import ConfigurationError, load_dotenv_file, load_settings


def _cmd_check(args, settings) -> int:
    if not settings.uses_embedded_database:  # the embedded server is started on demand
        from foxreviews_pipeline.lib.db.errors import require_reachable

        require_reachable(settings.database_url)
    print(repr(settings))
    return 0


def _cmd_db(args, settings) -> int:
    from foxreviews_pipeline.lib.db.database import ready_database_url
    from foxreviews_pipeline.lib.db.server import (
        embedded_pgdata,
        embedded_server_pid,
        stop_embedded_server,
    )
    from foxreviews_pipeline.lib.settings import redact_url

    if args.action == "stop":
        if not settings.uses_embedded_database:
            print("FOXREVIEWS_DATABASE_URL is set: no embedded server to stop", file=sys.stderr)
            return 1
        stopped = stop_embedded_server(settings.home)
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
        return 0
    if args.action == "status":
        if not settings.uses_embedded_database:
            print(f"configured server: {redact_url(settings.database_url)}")
            return 0
        pid = embedded_server_pid(settings.home)
        state = f"running, pid {pid}" if pid else "stopped"
        print(f"embedded PostgreSQL in {embedded_pgdata(settings.home)}: {state}")
        return 0
    url = ready_database_url(settings)  # start / url: starts it and applies migrations
    print(redact_url(url) if args.action == "url" else "embedded PostgreSQL ready" if settings.uses_embedded_database else "database ready")
    return 0


def _cmd_instance(args, settings) -> int:
    import subprocess
    from pathlib import Path

    from foxreviews_pipeline.instance import (
        POOL_LIMITS,
        default_env_file,
        prepare_instance,
        set_pool_limits,
        write_env_block,
    )
    from foxreviews_pipeline.lib.db.server import database_name

    env_file = Path(args.env_file).expanduser().resolve() if args.env_file else default_env_file()
    values = prepare_instance(settings)
    changed = write_env_block(env_file, values)
    print(f"Dagster instance: {values['DAGSTER_HOME']} (storage: database "
          f"{database_name(values['FOXREVIEWS_DAGSTER_DATABASE_URL'])})")
    print(f"{env_file}: {'updated' if changed else 'up to date'} (DAGSTER_HOME, "
          "FOXREVIEWS_DAGSTER_DATABASE_URL)")
    try:
        set_pool_limits(values)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        print(f"pools not set: {lines[-1] if lines else exc}", file=sys.stderr)
        return 1
    print("pools: " + ", ".join(f"{pool} {limit}" for pool, limit in POOL_LIMITS.items()))
    return 0


def _cmd_run_day(args, settings) -> int:
    from datetime import date

    from foxreviews_pipeline.run_day import run_day

    if args.date is not None:
        try:
            if len(args.date) != 10:
                raise ValueError("not of the form YYYY-MM-DD")
            date.fromisoformat(args.date)
        except ValueError as exc:
            print(f"foxreviews: --date must be a day YYYY-MM-DD, got {args.date!r} ({exc})",
                  file=sys.stderr)
            return 2
    return run_day(args.date, settings)


def _cmd_changes(args, settings) -> int:
    import json

    import psycopg

    from foxreviews_pipeline.lib.db.database import ready_database_url
    from foxreviews_pipeline.lib.directory.change_feed import follow

    url = ready_database_url(settings)
    with psycopg.connect(url, application_name="foxreviews", autocommit=True) as conn:
        try:
            for change in follow(conn, args.since, limit=args.limit, entity=args.entity):
                print(json.dumps(change.as_json(), ensure_ascii=False) if args.json else change.line())
        except psycopg.errors.NoDataFound as exc:  # a position the retention purged
            print(f"foxreviews: {exc.diag.message_primary or exc}", file=sys.stderr)
            return 1
    return 0


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="foxreviews", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the configuration")
    db = sub.add_parser("db", help="the embedded PostgreSQL server")
    db.add_argument("action", choices=["status", "start", "stop", "url"])
    inst = sub.add_parser("instance", help="prepare the Dagster instance and record it in .env")
    inst.add_argument("--env-file", help="the file to record it in (default: the project's .env)")
    run = sub.add_parser("run-day", help="materialize reference data and one SIRENE day end to end")
    run.add_argument("--date", help="the day (YYYY-MM-DD, Paris time); default: yesterday")
    changes = sub.add_parser("changes", help="print the change feed after a change id")
    changes.add_argument("--since", type=_non_negative, required=True,
                         help="the id of the last change already read (0: from the start)")
    changes.add_argument("--entity", choices=["entreprise", "prolocalisation", "ville"],
                         help="only this entity's changes (snapshot markers are always shown)")
    changes.add_argument("--limit", type=_non_negative, help="at most this many changes")
    changes.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)

    load_dotenv_file()
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"foxreviews: {exc}", file=sys.stderr)
        return 2
    handler = {
        "check": _cmd_check, "db": _cmd_db, "instance": _cmd_instance, "run-day": _cmd_run_day,
        "changes": _cmd_changes,
    }[args.command]
    try:
        return handler(args, settings)
    except _one_line_errors() as exc:
        print(f"foxreviews: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("foxreviews: interrupted", file=sys.stderr)
        return 130


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Failures whose message is the whole story: a lost database, a failed run, a pool
    wait given up."""
    from foxreviews_pipeline.lib.db.errors import DatabaseUnreachable
    from foxreviews_pipeline.recovery import PoolWaitTimeout
    from foxreviews_pipeline.run_day import RunFailed

    return (DatabaseUnreachable, RunFailed, PoolWaitTimeout)


if __name__ == "__main__":
    sys.exit(main())
