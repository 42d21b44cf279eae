"""The ``loom`` command line (contract A2).

Exit codes: 0 success, 1 a user error (with a clear message, never a
traceback), 2 bad usage (click's own).
"""
from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
from pathlib import Path

import click

from engine.clock import Clock, parse_instant
from engine.db import database_url, redact_url as _redact
from engine.errors import first_line as _first_line

BUNDLED_APP = Path(__file__).resolve().parent.parent / "apps" / "automotive_crm"


class UserError(click.ClickException):
    exit_code = 1

    def show(self, file=None):  # no "Error:" prefix noise for multi-line problem lists
        click.echo(self.message, err=True)


def _runtime(ctx: click.Context, clock: Clock | None = None):
    from ui.wiring import build_runtime
    try:
        return build_runtime(ctx.obj["db"], clock)
    except Exception as exc:  # noqa: BLE001 - e.g. database unreachable
        raise UserError(f"cannot open the database {_redact(ctx.obj['db'])}: {_first_line(exc)}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db", default=None, metavar="URL",
              help="Database URL (default: $LOOM_DATABASE_URL, else sqlite:///loom.db).")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """Loom: apps from YAML -- forms, flows, rules and reports."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = database_url(db)


@main.command()
@click.argument("path", type=click.Path())
@click.option("--no-cache", is_flag=True,
              help="Re-check every file; don't read or write the per-file results in $LOOM_CACHE_DIR (~/.cache/loom).")
def validate(path: str, no_cache: bool) -> None:
    """Check a package folder or .zip; print OK or FILE:LINE:COL problems."""
    from engine.checkcache import checks, default_directory
    from engine.definitions import compile_package
    from engine.package import PackageError, read_package
    from engine.problems import DefinitionError
    from ui.wiring import load_engines

    load_engines()
    checks.use_directory(None if no_cache else default_directory())
    try:
        appdef = compile_package(read_package(path))
    except PackageError as exc:
        raise UserError(str(exc)) from None
    except DefinitionError as exc:
        raise UserError("\n".join(str(p) for p in exc.problems)) from None
    finally:
        checks.flush()
    click.echo(f"OK {appdef.name} {appdef.version}")


@main.command("import")
@click.argument("path", type=click.Path())
@click.option("--dry-run", is_flag=True, help="Show the migration plan without applying it.")
@click.option("--allow-drop", is_flag=True, help="Allow dropping columns/tables (deletes their data).")
@click.pass_context
def import_(ctx: click.Context, path: str, dry_run: bool, allow_drop: bool) -> None:
    """Install or upgrade an app from a folder or .zip, atomically."""
    from engine.installer import InstallError, install
    from engine.package import PackageError, read_package
    from engine.problems import DefinitionError

    rt = _runtime(ctx)
    try:
        report = install(rt, read_package(path), dry_run=dry_run, allow_drop=allow_drop, actor=os.environ.get("USER", "cli"))
    except PackageError as exc:
        raise UserError(str(exc)) from None
    except DefinitionError as exc:
        raise UserError("\n".join(str(p) for p in exc.problems)) from None
    except InstallError as exc:
        raise UserError(f"import failed, nothing was changed: {exc}") from None
    for line in report.lines():
        click.echo(line)


@main.command()
@click.argument("app")
@click.option("-o", "--output", required=True, type=click.Path(), help="The .zip file to write.")
@click.pass_context
def export(ctx: click.Context, app: str, output: str) -> None:
    """Write an installed app's definitions as a package .zip."""
    from engine.runtime import AppNotFound

    rt = _runtime(ctx)
    try:
        appdef = rt.app(app)
    except AppNotFound:
        raise UserError(f"no app '{app}' is installed; installed: {', '.join(rt.app_names()) or 'none'}") from None
    Path(output).write_bytes(appdef.package.to_zip())
    click.echo(f"Exported {appdef.name} {appdef.version} to {output}")


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The backup .zip to write.")
@click.option("--db", "db", default=None, metavar="URL", help="Database to back up (overrides loom --db).")
@click.pass_context
def backup(ctx: click.Context, output: str, db: str | None) -> None:
    """Write every table (and LOOM_FILES_DIR) to a portable .zip backup."""
    from engine.backup import BackupError, backup as run_backup, files_dir

    try:
        summary = run_backup(db or ctx.obj["db"], output, files=files_dir())
    except BackupError as exc:
        raise UserError(str(exc)) from None
    for line in summary.lines:
        click.echo(line)


@main.command()
@click.argument("archive", type=click.Path())
@click.option("--db", "db", default=None, metavar="URL", help="Database to restore into (overrides loom --db).")
@click.option("--force", is_flag=True, help="Replace everything in a database that already holds data.")
@click.pass_context
def restore(ctx: click.Context, archive: str, db: str | None, force: bool) -> None:
    """Restore a backup .zip into an empty database, in one transaction."""
    from engine.backup import BackupError, restore as run_restore

    files = os.environ.get("LOOM_FILES_DIR")
    if files:
        Path(files).mkdir(parents=True, exist_ok=True)
    try:
        summary = run_restore(db or ctx.obj["db"], archive, force=force, files=Path(files) if files else None)
    except BackupError as exc:
        raise UserError(str(exc)) from None
    for line in summary.lines:
        click.echo(line)


@main.command()
@click.option("--no-users", is_flag=True, help="Don't create demo users.")
@click.pass_context
def demo(ctx: click.Context, no_users: bool) -> None:
    """Install the bundled automotive CRM with demo data."""
    rt = _runtime(ctx)
    for line in install_demo(rt, create_users=not no_users):
        click.echo(line)


def install_demo(rt, create_users: bool = True) -> list[str]:
    """Install the bundled CRM, its demo data and demo users; returns lines to print."""
    from engine.auth import password_problem
    from engine.installer import install
    from engine.package import read_package

    weak = password_problem(os.environ.get("LOOM_DEMO_PASSWORD")) if os.environ.get("LOOM_DEMO_PASSWORD") else None
    if create_users and weak:              # checked before anything is installed
        raise UserError(f"LOOM_DEMO_PASSWORD {weak[1]}")
    report = install(rt, read_package(BUNDLED_APP), actor="demo")
    lines = report.lines()
    if create_users:
        lines += _demo_users(rt, report.app)
    seeder = rt.services.get("seeder")
    if seeder is not None and report.status != "unchanged":
        lines += seeder.seed_demo(rt, report.app)
    return lines


def _demo_users(rt, app_name: str) -> list[str]:
    """Users from the package's ``seed/users.yaml``, with one password printed once."""
    from engine.auth import hash_password, upsert_user
    from engine.yamlpos import load_yaml

    app = rt.app(app_name)
    path = "seed/users.yaml"
    if path not in app.package.files:
        return []
    users = load_yaml(app.package.text(path)).data.get("users") or []
    password = os.environ.get("LOOM_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    hashed = hash_password(password)
    with rt.db.write() as conn:
        for u in users:
            upsert_user(conn, rt.clock.now(), u["username"], u.get("roles") or [], u.get("attrs") or {},
                        password_hash=hashed, display_name=u.get("display_name"), language=u.get("language"))
    names = ", ".join(u["username"] for u in users[:6]) + (", ..." if len(users) > 6 else "")
    shown = "(from LOOM_DEMO_PASSWORD)" if os.environ.get("LOOM_DEMO_PASSWORD") else password
    return [f"Created {len(users)} demo users ({names}); password for all: {shown}",
            "This password is shown only once; set LOOM_DEMO_PASSWORD to choose it, or 'loom user add' to change it."]


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes.")
@click.option("--no-scheduler", is_flag=True, help="Don't run timers/outbox in this process (run 'loom worker').")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, no_scheduler: bool) -> None:
    """Serve the web app and JSON API."""
    import uvicorn

    rt = _runtime(ctx)
    if not rt.app_names():
        click.echo("First start: installing the bundled automotive CRM with demo data...")
        for line in install_demo(rt):
            click.echo(line)
    os.environ["LOOM_DATABASE_URL"] = ctx.obj["db"]
    os.environ["LOOM_SCHEDULER"] = "0" if no_scheduler else "1"
    click.echo(f"Loom is running at http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    click.echo("Sign in with one of the users above, or create one: loom user add NAME --role admin --password ...")
    uvicorn.run("ui.asgi:app", host=host, port=port, workers=workers, log_level="warning", proxy_headers=True)


@main.command()
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls.")
@click.pass_context
def worker(ctx: click.Context, interval: float) -> None:
    """Run the scheduler/outbox loop (any number may run beside serve)."""
    rt = _runtime(ctx)
    scheduler = rt.services.get("scheduler")
    if scheduler is None:
        raise UserError("no scheduler is installed in this build")
    click.echo(f"Worker started (polling every {interval}s); Ctrl+C to stop")
    try:
        scheduler.run_forever(interval=interval)
    except KeyboardInterrupt:
        click.echo("Worker stopped")


@main.command()
@click.option("--now", "now", default=None, metavar="ISO8601", help="Fire everything due up to this instant.")
@click.pass_context
def tick(ctx: click.Context, now: str | None) -> None:
    """Fire everything due up to NOW once, print counts, exit."""
    clock = Clock()
    if now:
        try:
            clock.set(parse_instant(now))
        except ValueError:
            raise UserError(f"--now: '{now}' is not an ISO 8601 time (e.g. 2026-11-23T09:00:00+08:00)") from None
    rt = _runtime(ctx, clock)
    scheduler = rt.services.get("scheduler")
    counts = scheduler.tick(clock.now()) if scheduler is not None else {"timers": 0, "messages": 0}
    click.echo(" ".join(f"{k}={v}" for k, v in counts.items()) + f" now={clock.now().isoformat()}")


@main.group()
def user() -> None:
    """Manage users."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="A role (repeat for several).")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="An attribute, e.g. region=east.")
@click.option("--password", default=None, help="Password (prompted if omitted and the user is new).")
@click.option("--display-name", default=None)
@click.option("--language", type=click.Choice(["zh", "en"]), default=None)
@click.pass_context
def user_add(ctx: click.Context, name: str, roles: tuple, attrs: tuple, password: str | None,
             display_name: str | None, language: str | None) -> None:
    """Create or update a user with roles and attributes."""
    from engine.audit import audit
    from engine.auth import AuthError, get_user, revoke_user_tokens, upsert_user

    parsed = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--attr '{item}': write KEY=VALUE, e.g. --attr region=east")
        parsed[key.strip()] = value.strip()
    rt = _runtime(ctx)
    with rt.db.read() as conn:
        exists = get_user(conn, name) is not None
    if password is None and not exists:
        if not sys.stdin.isatty():
            raise UserError("--password is required for a new user when not running interactively")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with rt.db.write() as conn:
            u = upsert_user(conn, rt.clock.now(), name, list(roles), parsed, password=password,
                            display_name=display_name, language=language)
            signed_out = revoke_user_tokens(conn, rt.clock.now(), name) if exists and password is not None else 0
            audit(conn, rt.clock.now(), os.environ.get("USER", "cli"), "user.update" if exists else "user.create",
                  details={"username": name, "roles": sorted(u.roles), "attrs": parsed})
    except AuthError as exc:
        raise UserError(str(exc)) from None
    attrs_txt = " ".join(f"{k}={v}" for k, v in u.attrs.items())
    click.echo(f"{'Updated' if exists else 'Created'} user {u.username} roles={','.join(sorted(u.roles))}"
               + (f" {attrs_txt}" if attrs_txt else "")
               + (f"; new password: {signed_out} session(s)/token(s) signed out" if signed_out else ""))


@main.group()
def keys() -> None:
    """Manage the keys that encrypt personal data."""


@keys.command("rotate")
@click.argument("app")
@click.pass_context
def keys_rotate(ctx: click.Context, app: str) -> None:
    """Re-encrypt APP's personal data with the newest key in LOOM_SECRET_KEYS."""
    from engine.audit import audit
    from engine.runtime import AppNotFound
    from forms.keys import rotate_keys

    rt = _runtime(ctx)
    try:
        counts = rotate_keys(rt, app)
    except AppNotFound:
        raise UserError(f"no app '{app}' is installed") from None
    with rt.db.write() as conn:
        audit(conn, rt.clock.now(), os.environ.get("USER", "cli"), "keys.rotate", app=app, details=counts)
    total = sum(counts.values())
    click.echo(f"Re-encrypted {total} records with key '{rt.keyring.current}'"
               + "".join(f"\n  {form}: {n}" for form, n in counts.items()))


if __name__ == "__main__":  # pragma: no cover
    main()
