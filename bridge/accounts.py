"""Merchant accounts for the settings page: hashed passwords, throttled sign-in."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from werkzeug.security import check_password_hash, generate_password_hash

from . import db
from .errors import ConfigError
from .ratelimit import RateLimiter

MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A hash to compare against when the e-mail is unknown, so both answers take as long.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


@dataclass(frozen=True)
class Merchant:
    id: int
    email: str
    language: str
    # Sessions carry the version they were issued under; end_sessions() raises it.
    session_version: int = 0


class SignInThrottled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many attempts; try again in {int(retry_after) + 1} s")
        self.retry_after = retry_after


class Accounts:
    def __init__(self, engine: Engine, *, attempts: int = 5, window: float = 900.0) -> None:
        self.engine = engine
        # Failed sign-ins per IP address and per account, in the same shared table as the UPay
        # status budget (keys are prefixed, never an e-mail or IP in clear).
        self.limiter = RateLimiter(engine, attempts, window)

    def create(self, email: str, password: str, language: str = "en") -> Merchant:
        email = email.strip().lower()
        if not _EMAIL.match(email) or len(email) > 254:
            raise ConfigError("not a valid e-mail address")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(db.merchants.c.id).where(db.merchants.c.email == email)).first():
                raise ConfigError(f"an account for {email} exists already")
            pk = conn.execute(db.merchants.insert().values(
                email=email, password_hash=generate_password_hash(password),
                language=language if language in ("en", "ar") else "en",
                created_at=time.time())).inserted_primary_key[0]
        return Merchant(pk, email, language)

    def authenticate(self, email: str, password: str, ip: str) -> Merchant | None:
        email = email.strip().lower()[:254]
        keys = [_key("ip", ip), _key("email", email)]
        # The attempt is counted before the password is checked, atomically: checking first
        # and counting after the (slow) hash let 40 parallel guesses through a limit of 5.
        taken: list[str] = []
        for key in keys:
            if self.limiter.acquire(key) > 0:
                for done in taken:
                    self.limiter.give_back(done)
                raise SignInThrottled(self.limiter.window)
            taken.append(key)
        row = self._row(db.merchants.c.email == email)
        ok = check_password_hash(row.password_hash if row else _DUMMY_HASH, password)
        if row is None or not ok:
            return None
        for key in keys:  # only failed attempts count against the limit
            self.limiter.give_back(key)
        return _merchant(row)

    def get(self, merchant_id: int) -> Merchant | None:
        row = self._row(db.merchants.c.id == merchant_id)
        return _merchant(row) if row else None

    def by_email(self, email: str) -> Merchant | None:
        row = self._row(db.merchants.c.email == email.strip().lower())
        return _merchant(row) if row else None

    def end_sessions(self, merchant_id: int) -> None:
        """Sign the merchant out everywhere: every session issued before now stops working.

        The session cookie is stateless, so clearing it in one browser leaves copies valid;
        raising the version in the database is what refuses them.
        """
        with self.engine.begin() as conn:
            # Incremented in SQL, not read-modify-write: two sign-outs at once both count.
            conn.execute(db.merchants.update().where(db.merchants.c.id == merchant_id)
                         .values(session_version=db.merchants.c.session_version + 1))

    def dashboard_session_versions(self, store_ids: Iterable[str]) -> dict[str, int]:
        """The Dashboard session version of each of these stores; a store that is gone (removed
        from the bridge) is missing from the answer, so its sessions end too."""
        ids = [str(i)[:16] for i in store_ids]
        if not ids:
            return {}
        d = db.dashboard_sessions.c
        with db.reading(self.engine) as conn:
            rows = conn.execute(
                sa.select(db.stores.c.id, sa.func.coalesce(d.version, 0))
                .select_from(db.stores.outerjoin(db.dashboard_sessions,
                                                 d.store_id == db.stores.c.id))
                .where(db.stores.c.id.in_(ids))).all()
        return {store_id: version for store_id, version in rows}

    def end_dashboard_sessions(self, store_id: str) -> None:
        """End every Saleor Dashboard session of the store (the sign-out of a Dashboard session,
        a reinstall of the app): like a merchant's, a Dashboard session's cookie is stateless,
        and only a version it no longer matches refuses its copies."""
        d = db.dashboard_sessions.c
        dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
        # One upsert, raised in SQL: two sign-outs at once both count. Inserted only for a store
        # that exists (the row's foreign key), so a store removed meanwhile is no error.
        stmt = dialect.insert(db.dashboard_sessions).from_select(
            ["store_id", "version"],
            sa.select(db.stores.c.id, sa.literal(1)).where(db.stores.c.id == store_id[:16]),
        ).on_conflict_do_update(index_elements=["store_id"], set_={"version": d.version + 1})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def set_language(self, merchant_id: int, language: str) -> None:
        if language not in ("en", "ar"):
            return
        with self.engine.begin() as conn:
            conn.execute(db.merchants.update().where(db.merchants.c.id == merchant_id)
                         .values(language=language))

    def _row(self, where: Any) -> Any:
        with db.reading(self.engine) as conn:
            return conn.execute(sa.select(db.merchants).where(where)).first()


def _merchant(row: Any) -> Merchant:
    return Merchant(row.id, row.email, row.language, row.session_version)


def _key(kind: str, value: str) -> str:
    return "login:" + hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:24]
