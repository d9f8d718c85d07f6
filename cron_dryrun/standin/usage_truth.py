"""Deterministic OpenAI usage for a stand-in organisation. Pure: no I/O, no clock.

The truth is defined lazily at minute granularity: for each (stream, UTC hour) a hash
of the seed decides whether the stream was active and, if so, on which few minutes of
that hour and with what usage. Any bucket (1d, 1h, 1m, or an unaligned window) is the
sum of the minute events inside it, so every bucket width over any range adds up to
the same totals. The truth covers all time, including the rest of today: an export
written at stack start matches a cron run made later the same day.

A *stream* is one combination of the admin API's group-by fields (project, user,
API key, model, service tier, batch).
"""

from __future__ import annotations

import hashlib
import random
import string
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

# Undated names: a dated one (e.g. gpt-4o-mini-2024-07-18) makes the app emit PRICING_FALLBACK.
MODELS = ("gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini")
# What `UsageOrg.with_dated_model` renames gpt-4o-mini to (the pricing-fallback fault).
DATED_MODEL = "gpt-4o-mini-2024-07-18"
SERVICE_TIERS = ("default", "flex", "priority")
BUCKET_WIDTHS: Mapping[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}
GROUP_FIELDS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")

MINUTE = 60
HOUR = 3600


@dataclass(frozen=True, order=True)
class Stream:
    """One combination of the group-by fields; the unit usage is generated for."""

    project_id: str
    user_id: str
    api_key_id: str
    model: str
    service_tier: str
    batch: bool


@dataclass(frozen=True)
class Usage:
    """The admin API's metrics of one result; the export's other columns derive from them."""

    num_model_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_cached_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def export_metrics(self) -> dict[str, int]:
        """Every metric column of the dashboard export (contract.md section 5).

        The stand-in has no image usage and no cached audio; text tokens are the
        non-audio part. The cron derives its DB columns the same way.
        """
        return {
            "num_model_requests": self.num_model_requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_cached_tokens": self.input_cached_tokens,
            "input_uncached_tokens": self.input_tokens - self.input_cached_tokens,
            "input_text_tokens": self.input_tokens - self.input_audio_tokens,
            "output_text_tokens": self.output_tokens - self.output_audio_tokens,
            "input_cached_text_tokens": self.input_cached_tokens,
            "input_audio_tokens": self.input_audio_tokens,
            "input_cached_audio_tokens": 0,
            "output_audio_tokens": self.output_audio_tokens,
            "input_image_tokens": 0,
            "input_cached_image_tokens": 0,
            "output_image_tokens": 0,
        }


USAGE_FIELDS = tuple(f.name for f in fields(Usage))


@dataclass(frozen=True)
class _Profile:
    stream: Stream
    activity_pct: int  # chance, in %, that the stream is active in a given hour
    scale: int  # multiplies token counts: some streams are heavier than others


@dataclass(frozen=True)
class Bucket:
    """Usage of one bucket [start, end) (epoch seconds), per stream."""

    start: int
    end: int
    usage: Mapping[Stream, Usage]


def _draw(*parts: object) -> int:
    """A stable 64-bit number for the given parts (hash() is salted per process; this is not)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _token(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def epoch(value: datetime) -> int:
    """Epoch seconds of an aware datetime (naive is taken as UTC, like the app's columns)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def from_epoch(value: int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def bucket_edges(start: int, end: int, width: int) -> list[tuple[int, int]]:
    """Buckets from ``start`` in steps of ``width``; the last one ends at ``end``."""
    if end <= start:
        return []
    edges = []
    cursor = start
    while cursor < end:
        edges.append((cursor, min(cursor + width, end)))
        cursor += width
    return edges


@dataclass(frozen=True)
class UsageOrg:
    """One organisation's usage, generated from ``seed``. Build with ``UsageOrg.generate``."""

    seed: int
    profiles: tuple[_Profile, ...]

    @classmethod
    def generate(
        cls,
        seed: int,
        *,
        streams: int = 24,
        projects: int = 3,
        users: int = 4,
        api_keys: int = 5,
    ) -> UsageOrg:
        # str seeds are hashed with SHA-512 by random: stable across processes and versions.
        rng = random.Random(f"cron-dryrun/org/{seed}")
        project_ids = [f"proj_{_token(rng, 24)}" for _ in range(projects)]
        user_ids = [f"user-{_token(rng, 24)}" for _ in range(users)]
        keys = [(f"key_{_token(rng, 16)}", project_ids[i % projects]) for i in range(api_keys)]
        chosen: dict[Stream, _Profile] = {}
        for _ in range(streams * 20):  # bounded: duplicates are redrawn, never forever
            if len(chosen) == streams:
                break
            n = len(chosen)
            api_key_id, project_id = rng.choice(keys)
            # Forced variety so every org has batch, flex, priority and gpt-4o-mini rows.
            batch = n % 6 == 5
            tier = (
                "default"
                if batch
                else ("flex" if n % 4 == 2 else "priority" if n % 7 == 3 else "default")
            )
            model = "gpt-4o-mini" if n == 0 else rng.choice(MODELS)
            stream = Stream(project_id, rng.choice(user_ids), api_key_id, model, tier, batch)
            if stream not in chosen:
                chosen[stream] = _Profile(
                    stream, activity_pct=15 + rng.randrange(30), scale=1 + rng.randrange(4)
                )
        return cls(seed=seed, profiles=tuple(chosen.values()))

    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(p.stream for p in self.profiles)

    def _hour_events(self, index: int, hour: int) -> Iterator[tuple[int, Usage]]:
        profile = self.profiles[index]
        if _draw(self.seed, index, hour, "on") % 100 >= profile.activity_pct:
            return
        count = 1 + _draw(self.seed, index, hour, "n") % 3
        minutes = sorted({_draw(self.seed, index, hour, "m", k) % 60 for k in range(count)})
        for minute in minutes:
            d = [_draw(self.seed, index, hour, minute, name) for name in ("r", "i", "o", "c")]
            requests = 1 + d[0] % 12
            input_tokens = requests * (300 + d[1] % 2200) * profile.scale
            # at least 40 output tokens per request, so +1 % / +3 % drifts survive rounding
            output_tokens = requests * (40 + d[2] % 660) * profile.scale
            cached = input_tokens * (d[3] % 6) // 10
            yield hour + minute * MINUTE, Usage(requests, input_tokens, output_tokens, cached)

    def minute_events(self, start: int, end: int) -> Iterator[tuple[int, Stream, Usage]]:
        """Every (minute, stream, usage) with ``start <= minute < end`` (epoch seconds)."""
        first_hour = start - start % HOUR
        for hour in range(first_hour, end, HOUR):
            for index, profile in enumerate(self.profiles):
                for minute, usage in self._hour_events(index, hour):
                    if start <= minute < end:
                        yield minute, profile.stream, usage

    def buckets(self, start: int, end: int, width: int) -> list[Bucket]:
        """Usage per stream for each bucket of ``width`` seconds from ``start`` to ``end``."""
        edges = bucket_edges(start, end, width)
        sums: list[dict[Stream, Usage]] = [defaultdict(Usage) for _ in edges]
        for minute, stream, usage in self.minute_events(start, end):
            slot = (minute - start) // width
            sums[slot][stream] = sums[slot][stream] + usage
        return [Bucket(s, e, dict(sums[i])) for i, (s, e) in enumerate(edges)]

    def total(self, start: int, end: int) -> dict[Stream, Usage]:
        """Usage per stream over [start, end), whatever its length."""
        (bucket,) = self.buckets(start, end, end - start)
        return dict(bucket.usage)

    def with_dated_model(self) -> UsageOrg:
        """The same org reporting gpt-4o-mini under its dated name (pricing-fallback fault)."""
        profiles = tuple(
            replace(p, stream=replace(p.stream, model=DATED_MODEL))
            if p.stream.model == "gpt-4o-mini"
            else p
            for p in self.profiles
        )
        return replace(self, profiles=profiles)


def group_usage(
    usage: Mapping[Stream, Usage], group_by: Collection[str]
) -> list[tuple[dict[str, Any], Usage]]:
    """Aggregate per the requested group-by fields; ungrouped fields are None, as in the API."""
    unknown = set(group_by) - set(GROUP_FIELDS)
    if unknown:
        raise ValueError(f"unknown group_by field(s): {', '.join(sorted(unknown))}")
    grouped: dict[tuple[Any, ...], Usage] = defaultdict(Usage)
    for stream, value in usage.items():
        key = tuple(getattr(stream, name) if name in group_by else None for name in GROUP_FIELDS)
        grouped[key] = grouped[key] + value
    ordered = sorted(
        grouped.items(), key=lambda kv: tuple("" if v is None else str(v) for v in kv[0])
    )
    return [(dict(zip(GROUP_FIELDS, key, strict=True)), value) for key, value in ordered]


def usage_per_model(usage: Mapping[Stream, Usage]) -> dict[str, Usage]:
    """Usage summed per model: all the legacy /v1/usage endpoint can tell."""
    per_model: dict[str, Usage] = defaultdict(Usage)
    for stream, value in usage.items():
        per_model[stream.model] = per_model[stream.model] + value
    return dict(sorted(per_model.items()))
