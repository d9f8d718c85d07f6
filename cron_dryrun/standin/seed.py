"""Seed data for the local stack: users, provider keys, and a few days of history.

The provider keys hold *stand-in* secrets (``standin-admin-...``), never a real
``sk-`` key. Their ``encrypted_key`` / ``iv`` / ``auth_tag`` columns are NOT
encryption: ``encrypted_key`` is base64 of a tag plus the stand-in key, reversible
by ``decode_key``; ``iv`` and ``auth_tag`` are base64 of hashes of it, only so the
NOT NULL columns look like the app's. Each key reads its own organisation's usage
from the stand-in OpenAI API (``org_for``).
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from cron_dryrun.standin.store import insert_rows
from cron_dryrun.standin.usage_rows import EventRow
from cron_dryrun.standin.usage_truth import UsageOrg, epoch, usage_per_model
from cron_dryrun.windows import day_start, naive_utc

_ENCODING_TAG = b"cron-dryrun-standin-v1:"
# Days before "now" that get historical rows: the DB is not empty, and the
# stale-update fault finds a row from five days ago.
HISTORY_DAYS = (3, 4, 5, 6, 7)


@dataclass(frozen=True)
class SeedKey:
    """One provider_keys row to load, with the stand-in key it encodes."""

    user_id: str
    provider: str
    usage_mode: str
    secret: str
    org_seed: int

    @property
    def is_openai(self) -> bool:
        return self.provider == "openai"


@dataclass(frozen=True)
class SeedPlan:
    seed: int
    users: tuple[str, ...]
    keys: tuple[SeedKey, ...]

    @property
    def openai_keys(self) -> tuple[SeedKey, ...]:
        return tuple(k for k in self.keys if k.is_openai)

    @property
    def admin_key(self) -> SeedKey:
        (key,) = [k for k in self.keys if k.is_openai and k.usage_mode == "admin"]
        return key


def seed_plan(seed: int = 7) -> SeedPlan:
    """3 users, 4 OpenAI keys (exactly one admin), 1 Anthropic key; all derived from ``seed``."""
    rng = random.Random(f"cron-dryrun/keys/{seed}")
    users = tuple(f"user_standin_{n}" for n in (1, 2, 3))

    def secret(kind: str) -> str:
        return f"standin-{kind}-{rng.getrandbits(96):024x}"

    keys = (
        SeedKey(users[0], "openai", "admin", secret("admin"), seed),
        SeedKey(users[0], "openai", "standard", secret("standard"), seed * 1000 + 1),
        SeedKey(users[1], "openai", "standard", secret("standard"), seed * 1000 + 2),
        SeedKey(users[2], "openai", "standard", secret("standard"), seed * 1000 + 3),
        SeedKey(users[2], "anthropic", "standard", secret("anthropic"), seed * 1000 + 4),
    )
    return SeedPlan(seed=seed, users=users, keys=keys)


def org_for(key: SeedKey) -> UsageOrg:
    """The organisation a key reads: admin orgs are bigger than the standard ones."""
    if key.usage_mode == "admin":
        return UsageOrg.generate(key.org_seed)
    return UsageOrg.generate(key.org_seed, streams=6, projects=1, users=2, api_keys=2)


def encode_key(secret: str) -> tuple[str, str, str]:
    """(encrypted_key, iv, auth_tag) for a stand-in key. Not encryption: see the module doc."""
    raw = secret.encode()
    encoded = base64.b64encode(_ENCODING_TAG + raw).decode()
    iv = base64.b64encode(hashlib.blake2b(raw, digest_size=12, person=b"iv").digest()).decode()
    tag = base64.b64encode(hashlib.blake2b(raw, digest_size=16, person=b"tag").digest()).decode()
    return encoded, iv, tag


def decode_key(encrypted_key: str) -> str:
    """The stand-in key inside ``encrypted_key``; ValueError if it is not one of ours."""
    raw = base64.b64decode(encrypted_key.encode(), validate=True)
    if not raw.startswith(_ENCODING_TAG):
        raise ValueError("not a stand-in key encoding (the stand-in cannot decrypt real keys)")
    return raw[len(_ENCODING_TAG) :].decode()


def history_rows(key_id: int, key: SeedKey, day: datetime) -> list[EventRow]:
    """What a healthy run would have written for ``key`` in the UTC day starting ``day``."""
    org = org_for(key)
    start, end = naive_utc(day), naive_utc(day + timedelta(days=1))
    usage = org.total(epoch(day), epoch(day + timedelta(days=1)))
    if key.usage_mode == "admin":
        return [
            EventRow(
                key_id=key_id,
                model=s.model,
                window_start=start,
                window_end=end,
                usage=u,
                project_id=s.project_id,
                openai_user_id=s.user_id,
                openai_api_key_id=s.api_key_id,
                service_tier=s.service_tier,
                batch=s.batch,
            )
            for s, u in sorted(usage.items())
        ]
    return [
        EventRow(key_id=key_id, model=model, window_start=start, window_end=end, usage=u)
        for model, u in usage_per_model(usage).items()
    ]


def load_seed(database_dsn: str, plan: SeedPlan, now: datetime) -> dict[str, int]:
    """Load ``plan`` into a database that has the app's tables; returns provider_keys ids by secret.

    Idempotent: users and keys already present are kept, and history is written only
    for keys this call inserted, so loading twice does not duplicate anything.
    """
    today = day_start(now)
    ids: dict[str, int] = {}
    with psycopg.connect(database_dsn, connect_timeout=10) as conn, conn.transaction():
        for user in plan.users:
            conn.execute("INSERT INTO users (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (user,))
        for key in plan.keys:
            encrypted, iv, tag = encode_key(key.secret)
            found = conn.execute(
                "SELECT id FROM provider_keys WHERE encrypted_key = %s", (encrypted,)
            ).fetchone()
            if found is not None:
                ids[key.secret] = int(found[0])
                continue
            row = conn.execute(
                "INSERT INTO provider_keys (user_id, provider, encrypted_key, iv, auth_tag, usage_mode)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (key.user_id, key.provider, encrypted, iv, tag, key.usage_mode),
            ).fetchone()
            assert row is not None  # INSERT ... RETURNING always returns the row
            ids[key.secret] = key_id = int(row[0])
            if key.is_openai:
                for days in HISTORY_DAYS:
                    insert_rows(conn, history_rows(key_id, key, today - timedelta(days=days)))
    return ids
