"""Rank detectors by their mean F1 and mean AUROC over the scenarios of a suite.

The input is one record per (scenario, detector): the scenario id, the detector's name,
track and source (``registered`` or the submission file), and its precision, recall, F1
and AUROC on that scenario. Detectors of the ``oracle`` track know the trigger, so they are
ranked in a group of their own, after the others, and never beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

logger = logging.getLogger(__name__)

METRICS = ("precision", "recall", "f1", "auroc")
RECORD_FIELDS = ("scenario", "detector", "track", "source", *METRICS)

RANKED_GROUP = "ranked"
ORACLE_GROUP = "oracle"
"""Ranking groups: every detector that needs no trigger, and the trigger-aware upper bounds."""


@dataclass(frozen=True)
class Leaderboard:
    """Rankings and the per-scenario results they come from.

    ``ranking`` has one row per detector with the columns ``group``, ``rank_f1``,
    ``rank_auroc``, ``detector``, ``track``, ``source``, ``mean_METRIC`` and ``std_METRIC``
    for each metric, and ``n_scenarios``. Its rows are in ranking order (group, then F1).
    ``scenarios`` is the long table of records, ``scenario_ids`` the suite's scenarios.
    """

    suite: str
    ranking: pd.DataFrame
    scenarios: pd.DataFrame
    scenario_ids: tuple[str, ...]

    def breakdown(self, metric: str = "f1") -> pd.DataFrame:
        """Return ``metric`` per detector (rows, ranking order) and scenario (columns)."""
        table = self.scenarios.pivot(index="detector", columns="scenario", values=metric)
        return table.reindex(index=list(self.ranking["detector"]), columns=self.scenario_ids)


def rank(records: pd.DataFrame, scenario_ids: Sequence[str], suite: str) -> Leaderboard:
    """Rank the detectors in ``records`` (columns :data:`RECORD_FIELDS`).

    Means skip undefined values (an AUROC is undefined when a scenario has no poisons).
    Ties in mean F1 are broken by mean AUROC, then by name. ``rank_f1`` and ``rank_auroc``
    count from 1 within each group, and equal means share a rank.

    Raises:
        ValueError: if a column is missing, a (scenario, detector) pair repeats, a
            detector's track differs between scenarios, or a detector misses a scenario of
            ``scenario_ids`` (a mean over fewer scenarios would not be comparable).
    """
    missing_columns = [name for name in RECORD_FIELDS if name not in records.columns]
    if missing_columns:
        raise ValueError(f"records lack the columns {missing_columns}")
    records = records.loc[:, list(RECORD_FIELDS)].copy()
    repeated = records.duplicated(["scenario", "detector"], keep=False)
    if repeated.any():
        first = records[repeated].iloc[0]
        raise ValueError(
            f"detector {first['detector']} has several results on scenario {first['scenario']}"
        )
    expected = set(scenario_ids)
    for detector, rows in records.groupby("detector", sort=False):
        if rows["track"].nunique() != 1:
            raise ValueError(
                f"detector {detector} has several tracks: {sorted(set(rows['track']))}"
            )
        absent = sorted(expected - set(rows["scenario"]))
        if absent:
            raise ValueError(
                f"detector {detector} has no result on {len(absent)} scenarios, e.g. {absent[0]}"
            )
    records = records[records["scenario"].isin(expected)]

    grouped = records.groupby(["detector", "track", "source"], sort=False)
    table = grouped[list(METRICS)].agg(["mean", "std"])
    table.columns = [f"{statistic}_{metric}" for metric, statistic in table.columns]
    table["n_scenarios"] = grouped["scenario"].nunique()
    table = table.reset_index()
    table["group"] = [
        ORACLE_GROUP if track == "oracle" else RANKED_GROUP for track in table["track"]
    ]

    parts = []
    for group in (RANKED_GROUP, ORACLE_GROUP):
        part = table[table["group"] == group].copy()
        if part.empty:
            continue
        part["_auroc"] = part["mean_auroc"].fillna(-1.0)
        part = part.sort_values(
            ["mean_f1", "_auroc", "detector"], ascending=[False, False, True], kind="stable"
        )
        part["rank_f1"] = part["mean_f1"].rank(method="min", ascending=False).astype(int)
        part["rank_auroc"] = part["_auroc"].rank(method="min", ascending=False).astype(int)
        parts.append(part.drop(columns="_auroc"))
    ranking = pd.concat(parts, ignore_index=True)
    columns = ["group", "rank_f1", "rank_auroc", "detector", "track", "source"]
    columns += [f"{statistic}_{metric}" for metric in METRICS for statistic in ("mean", "std")]
    columns.append("n_scenarios")
    logger.info("Ranked %d detectors on %d scenarios", len(ranking), len(expected))
    return Leaderboard(suite, ranking[columns], records, tuple(scenario_ids))
