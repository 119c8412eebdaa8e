"""What every toxicity rule reads: the records in scope, grouped into episodes once per call.

An *episode* of CRS, neurological toxicity or another adverse event opens at the first record at or above
the interrupt grade and closes at the first later record at or below the resolved grade (an absent or
resolved finding is grade 0). A *seizure episode* is one seizure however many resources record it: records
whose times lie within ``episodes.same_event_window_minutes`` of the episode's first record are that
episode, and a date-only record joins a timed one of the same day (``toxicity.toml [episodes]``).

Only records of the current course count (from its first infusion); without a known course start, only
recent records (``scope.unanchored_lookback_days``), and seizures are not counted at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from service.knowledge import Knowledge
from service.knowledge.toxicity import Policy
from service.timeline.model import Timeline, ToxicityRecord

Family = Literal["crs", "neuro", "other"]
FAMILIES: tuple[Family, ...] = ("crs", "neuro", "other")


@dataclass(frozen=True)
class Episode:
    """One toxicity at or above its interrupt grade, from onset to the record that shows it resolved."""

    family: Family
    key: str
    onset: ToxicityRecord
    peak: ToxicityRecord
    resolved_at: dt.datetime | None
    attributed_elsewhere: str | None = None
    """An AdverseEvent of this episode blames another drug (or says unrelated): no blinatumomab card."""

    def days_to_resolve(self, now: dt.datetime) -> float:
        """Days from onset to resolution, or to ``now`` while unresolved."""
        return ((self.resolved_at or now) - self.onset.at).total_seconds() / 86400


@dataclass(frozen=True)
class SeizureEpisode:
    """One seizure (or a charted cluster: ``count``), with every record that describes it."""

    at: dt.datetime
    records: tuple[ToxicityRecord, ...]
    count: int

    @property
    def first(self) -> ToxicityRecord:
        return self.records[0]


@dataclass(frozen=True)
class Context:
    timeline: Timeline
    kb: Knowledge
    course_start: dt.datetime | None
    records: tuple[ToxicityRecord, ...]
    """Records in scope (current course, or recent when the course start is unknown), oldest first; a date-only
    event re-timed to the first timed record of its kind on that day."""
    by_family: Mapping[Family, tuple[Episode, ...]]
    """The episodes of each family, found once per call (several rules read them)."""
    seizure_episodes: tuple[SeizureEpisode, ...]
    """Distinct seizures of the current course (empty when the course start is unknown)."""

    @classmethod
    def build(cls, timeline: Timeline, kb: Knowledge) -> Context:
        start = course_start(timeline)
        since = start if start is not None else timeline.now - dt.timedelta(
            days=kb.toxicity.scope.unanchored_lookback_days)
        records = _retimed(tuple(r for r in timeline.toxicities if since <= r.at <= timeline.now))
        policies = kb.toxicity.policies
        window = dt.timedelta(minutes=kb.toxicity.episodes.same_event_window_minutes)
        by_family = {f: _episodes(records, f, getattr(policies, f), window) for f in FAMILIES}
        seizures = _seizure_episodes(records, window) if start is not None else ()
        return cls(timeline, kb, start, records, by_family, seizures)

    def policy(self, family: Family) -> Policy:
        policy: Policy = getattr(self.kb.toxicity.policies, family)
        return policy

    def episodes(self, family: Family, *, attributed: bool = False) -> tuple[Episode, ...]:
        """This family's episodes, oldest first; those attributed to another drug only when asked."""
        return tuple(e for e in self.by_family[family] if attributed or e.attributed_elsewhere is None)

    def seizure_count(self) -> int:
        return sum(e.count for e in self.seizure_episodes)


def key_of(family: str, record: ToxicityRecord) -> str:
    """The episode key: the family, or for "other" events the event's name without grade words."""
    if family != "other":
        return family
    return f"other:{record.name_key or ' '.join(record.label.lower().split())}"


def course_start(timeline: Timeline) -> dt.datetime | None:
    starts = [p.course_start for p in timeline.positions.values() if p.course_start is not None]
    if starts:
        return min(starts)
    return min((p.start for p in timeline.infusions), default=None)


def grade_of(record: ToxicityRecord) -> int:
    return record.grade if record.grade is not None else -1


def _retimed(records: Sequence[ToxicityRecord]) -> tuple[ToxicityRecord, ...]:
    """A date-only record (a problem-list onset "2026-03-05") moved to the first timed record of its kind on
    that day, so it joins that episode instead of opening one at midnight."""
    first_timed: dict[tuple[str, dt.date], dt.datetime] = {}
    for r in records:
        if not r.date_only and not r.absent:
            first_timed.setdefault((key_of(r.kind, r), r.at.date()), r.at)
    out = [replace(r, at=first_timed.get((key_of(r.kind, r), r.at.date()), r.at))
           if r.date_only and not r.absent else r for r in records]
    return tuple(sorted(out, key=lambda r: (r.at, r.absent, r.ref)))


def _episodes(records: Sequence[ToxicityRecord], family: Family, policy: Policy,
              window: dt.timedelta) -> tuple[Episode, ...]:
    """The episodes of one family in ``records``, oldest first.

    A record at the interrupt grade charted within ``window`` of the onset of the episode just closed, and no worse
    than its peak, is that episode charted again (a diagnosis entered after the flowsheet already showed
    resolution), not a new one.
    """
    groups: dict[str, list[ToxicityRecord]] = {}
    for r in records:
        if r.kind == family and r.grade is not None:
            groups.setdefault(key_of(family, r), []).append(r)
    episodes: list[Episode] = []
    for key, recs in groups.items():
        current: list[ToxicityRecord] = []  # the open episode's records
        closed: Episode | None = None
        for r in recs:
            if (not current and closed is not None and r.at - closed.onset.at <= window
                    and grade_of(r) <= grade_of(closed.peak)):
                continue
            if grade_of(r) >= policy.interrupt_grade or (current and not r.absent
                                                        and grade_of(r) > policy.resolved_max_grade):
                current.append(r)
            elif grade_of(r) <= policy.resolved_max_grade and current:
                closed = _episode(family, key, current, r.at)
                episodes.append(closed)
                current = []
        if current:
            episodes.append(_episode(family, key, current, None))
    return tuple(sorted(episodes, key=lambda e: e.onset.at))


def _episode(family: Family, key: str, recs: Sequence[ToxicityRecord], resolved_at: dt.datetime | None) -> Episode:
    peak = max(recs, key=lambda r: (grade_of(r), -r.at.timestamp()))
    attributed = next((r.attributed_elsewhere for r in recs if r.attributed_elsewhere), None)
    return Episode(family, key, recs[0], peak, resolved_at, attributed)


def _seizure_episodes(records: Sequence[ToxicityRecord], window: dt.timedelta) -> tuple[SeizureEpisode, ...]:
    """Distinct seizures: records within ``window`` of an episode's first record are that episode.

    Absent findings ("Seizure activity: Not observed") and a Condition's abatement are never a seizure; a seizure
    an AdverseEvent attributes to another drug is not counted against blinatumomab.
    """
    episodes: list[list[ToxicityRecord]] = []
    for r in records:
        if r.kind != "seizure" or r.absent or r.attributed_elsewhere:
            continue
        if episodes and r.at - episodes[-1][0].at <= window:
            episodes[-1].append(r)
        else:
            episodes.append([r])
    return tuple(SeizureEpisode(at=recs[0].at, records=tuple(recs), count=max(x.count for x in recs))
                 for recs in episodes)
