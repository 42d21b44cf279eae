"""Users, passwords and tokens.

* Passwords are hashed with argon2id (argon2-cffi); there is no default
  password anywhere.
* API tokens are random 256-bit secrets; only their SHA-256 is stored, so a
  database leak does not leak usable tokens.  Tokens expire and can be revoked.
* Repeated failed sign-ins lock the account for a while (lockout).
* A password has at least 8 characters, at least 4 different ones, does not contain the user
  name and is not one of the most common passwords (NIST SP 800-63B's advice: length and a
  blocklist, no composition rules) -- :func:`password_problem`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from . import platform as P
from .clock import to_db

# argon2id with the library's defaults (RFC 9106 "low memory" profile).  The
# test suite sets LOOM_PASSWORD_HASH=fast to keep hundreds of sign-ins quick;
# never set it in production.
_hasher = (PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
           if os.environ.get("LOOM_PASSWORD_HASH") == "fast" else PasswordHasher())
# A hash of a random secret, verified when the user does not exist, so that
# response time doesn't reveal which user names exist.
_dummy_hash: str | None = None


def _dummy() -> str:
    """Made on first use, not at import: hashing costs ~0.3 s, which every CLI command paid."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


TOKEN_TTL = dt.timedelta(hours=12)
MAX_FAILED_LOGINS = 5
LOCKOUT = dt.timedelta(minutes=15)
SYSTEM = "system"
MIN_PASSWORD, MAX_PASSWORD = 8, 256
# the most used passwords of 8+ characters, in leaked lists worldwide and in China (lower case)
COMMON_PASSWORDS = frozenset("""
12345678 123456789 1234567890 0123456789 87654321 987654321 9876543210 11111111 00000000 88888888
66666666 99999999 12341234 11223344 112233445566 123123123 321321321 147258369 159357456 123456abc
a1234567 a12345678 a123456789 aa123456 aa12345678 abc12345 abc123456 abcd1234 qq123456 qwer1234
1qaz2wsx 1q2w3e4r 1q2w3e4r5t 1qaz2wsx3edc zxcvbnm1 zxcvbnm123 qwertyui qwertyuiop asdfghjkl asdf1234
password password1 password123 passw0rd p@ssw0rd p@ssword iloveyou iloveyou1 woaini1314 woaini520
5201314520 13141314 520520520 admin123 admin888 administrator root1234 welcome1 letmein1 sunshine
princess football baseball superman 1234qwer qazwsxedc q1w2e3r4 changeme changeme1 default1
""".split())


class AuthError(Exception):
    """Sign-in failed; the message is safe to show."""


class PasswordProblem(AuthError):
    """A refused password: ``field`` is the form field at fault (``password`` when one is set for a
    user, ``current_password``, ``new_password`` or ``confirm_password`` when a user changes their
    own), ``code`` a stable name (``too_short``, ``too_common``, ``wrong``...), the text says what
    to do."""

    def __init__(self, field: str, code: str, message: str):
        super().__init__(message)
        self.field, self.code = field, code


@dataclass(frozen=True)
class User:
    username: str
    roles: frozenset[str]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    language: str | None = None
    active: bool = True

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def env(self) -> dict:
        """Plain data for expressions: ``current_user.name``, ``.roles``, attributes -- a new dict
        each time (callers add names to it), copied from one worked out once per user object (a
        rule run asks for it several times)."""
        made = self.__dict__.get("_env")
        if made is None:
            made = {k: v for k, v in self.attrs.items()}
            made.update(name=self.username, username=self.username, roles=sorted(self.roles),
                        display_name=self.display_name or self.username)
            self.__dict__["_env"] = made          # (frozen: set past the dataclass's guard)
        return dict(made)

    @property
    def is_system(self) -> bool:
        return self.username == SYSTEM


SYSTEM_USER = User(SYSTEM, frozenset({"admin"}), {}, "System")


def password_problem(password: str | None, username: str = "") -> tuple[str, str] | None:
    """(code, what is wrong -- a predicate for "the password ...") when ``password`` may not be
    used for ``username``, else None."""
    pw = password or ""
    if len(pw) < MIN_PASSWORD:
        return "too_short", f"is too short: use at least {MIN_PASSWORD} characters"
    if len(pw) > MAX_PASSWORD:
        return "too_long", f"is too long: use at most {MAX_PASSWORD} characters"
    if len(set(pw)) < 4:
        return "too_simple", "is too simple: use at least 4 different characters"
    lowered = pw.lower()
    if lowered in COMMON_PASSWORDS:
        return "too_common", "is one of the most used passwords, which are tried first: choose another"
    if len(username) >= 3 and username.lower() in lowered:
        return "has_username", "must not contain the user name"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _row_to_user(row) -> User:
    return User(row.username, frozenset(row.roles or ()), dict(row.attrs or {}), row.display_name, row.language, row.active)


def get_user(conn: Connection, username: str) -> User | None:
    row = conn.execute(select(P.users).where(P.users.c.username == username)).first()
    return _row_to_user(row) if row else None


def list_users(conn: Connection, role: str | None = None, active_only: bool = True) -> list[User]:
    q = select(P.users).order_by(P.users.c.username)
    if active_only:
        q = q.where(P.users.c.active.is_(True))
    users = [_row_to_user(r) for r in conn.execute(q)]
    return [u for u in users if role is None or role in u.roles]


def upsert_user(conn: Connection, now: dt.datetime, username: str, roles: list[str], attrs: dict,
                password: str | None = None, display_name: str | None = None, language: str | None = None,
                active: bool = True, password_hash: str | None = None) -> User:
    """Create or update a user (``loom user add``)."""
    if not username or len(username) > 64 or not all(c.isalnum() or c in "._-@" for c in username):
        raise AuthError(f"invalid user name '{username}': use letters, digits and . _ - @ (at most 64)")
    values = dict(roles=sorted(set(roles)), attrs=attrs, updated_at=to_db(now), active=active)
    if display_name is not None:
        values["display_name"] = display_name
    if language is not None:
        values["language"] = language
    if password is not None:
        problem = password_problem(password, username)
        if problem:
            raise PasswordProblem("password", problem[0], "the password " + problem[1])
        values["password_hash"] = hash_password(password)
    elif password_hash is not None:  # many demo users share one password: hash it once
        values["password_hash"] = password_hash
    existing = conn.execute(select(P.users.c.id).where(P.users.c.username == username)).first()
    if existing:
        conn.execute(update(P.users).where(P.users.c.id == existing.id).values(**values))
    else:
        conn.execute(P.users.insert().values(username=username, created_at=to_db(now), failed_logins=0, **values))
    return get_user(conn, username)


def authenticate(conn: Connection, now: dt.datetime, username: str, password: str) -> User:
    """Check a password; count failures and lock after too many."""
    row = conn.execute(select(P.users).where(P.users.c.username == username)).first()
    if row is None or not row.password_hash:
        try:
            _hasher.verify(_dummy(), password or "")
        except VerificationError:
            pass
        raise AuthError("wrong user name or password")
    naive_now = to_db(now)
    if row.locked_until and row.locked_until > naive_now:
        raise AuthError("account locked after too many failed sign-ins; try again later or ask an admin")
    if not row.active:
        raise AuthError("this account is deactivated; ask an admin")
    try:
        _hasher.verify(row.password_hash, password or "")
    except (VerificationError, InvalidHashError):
        failed = (row.failed_logins or 0) + 1
        values: dict = {"failed_logins": failed}
        if failed >= MAX_FAILED_LOGINS:
            values.update(locked_until=naive_now + LOCKOUT, failed_logins=0)
        conn.execute(update(P.users).where(P.users.c.id == row.id).values(**values))
        raise AuthError("wrong user name or password") from None
    if row.failed_logins:
        conn.execute(update(P.users).where(P.users.c.id == row.id).values(failed_logins=0, locked_until=None))
    return _row_to_user(row)


def change_password(conn: Connection, now: dt.datetime, username: str, current: str, new: str,
                    confirm: str | None = None, keep_token: str | None = None) -> int:
    """A user changing their own password: the current one is checked like a sign-in (a wrong one
    counts toward the lock -- the caller must commit although this raises, as for a failed
    sign-in), the new one passes :func:`password_problem` and differs from it.  Every other session and
    API token of the user is revoked (``keep_token``: the one making the change stays signed in):
    whoever knew the old password is signed out.  Returns how many were revoked."""
    if confirm is not None and new != confirm:
        raise PasswordProblem("confirm_password", "mismatch", "the two new passwords do not match")
    weak = password_problem(new, username)
    if weak:
        raise PasswordProblem("new_password", weak[0], "the new password " + weak[1])
    try:
        authenticate(conn, now, username, current)
    except AuthError as exc:
        msg = str(exc)
        if msg == "wrong user name or password":
            msg = "the current password is wrong"
        raise PasswordProblem("current_password", "locked" if "locked" in msg else "wrong", msg) from None
    if new == current:
        raise PasswordProblem("new_password", "unchanged", "the new password is the same as the current one")
    conn.execute(update(P.users).where(P.users.c.username == username)
                 .values(password_hash=hash_password(new), updated_at=to_db(now)))
    return revoke_user_tokens(conn, now, username, keep=keep_token)


def revoke_user_tokens(conn: Connection, now: dt.datetime, username: str, keep: str | None = None) -> int:
    """Revoke every live session and API token of ``username`` but ``keep`` (after a password
    change or reset); returns how many."""
    t = P.tokens
    conds = [t.c.username == username, t.c.revoked_at.is_(None)]
    if keep:
        conds.append(t.c.token_hash != _digest(keep))
    return conn.execute(update(t).where(*conds).values(revoked_at=to_db(now))).rowcount


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(conn: Connection, now: dt.datetime, username: str, kind: str = "api",
                ttl: dt.timedelta = TOKEN_TTL) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(P.tokens.insert().values(token_hash=_digest(token), username=username, kind=kind,
                                          created_at=to_db(now), expires_at=to_db(now + ttl)))
    return token


def user_for_token(conn: Connection, now: dt.datetime, token: str) -> User | None:
    if not token or len(token) > 200:
        return None
    row = conn.execute(
        select(P.users).join(P.tokens, P.tokens.c.username == P.users.c.username)
        .where(P.tokens.c.token_hash == _digest(token), P.tokens.c.revoked_at.is_(None),
               P.tokens.c.expires_at > to_db(now), P.users.c.active.is_(True))).first()
    return _row_to_user(row) if row else None


def revoke_token(conn: Connection, now: dt.datetime, token: str) -> bool:
    res = conn.execute(update(P.tokens).where(P.tokens.c.token_hash == _digest(token), P.tokens.c.revoked_at.is_(None))
                       .values(revoked_at=to_db(now)))
    return res.rowcount > 0
