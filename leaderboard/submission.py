"""Results-file submissions: validate against the published JSON schema, then score.

A submission is a JSON file (``leaderboard/submission.schema.json``) with the results of
one detector on every scenario of one suite version. Each result gives either the metrics
(precision, recall, F1, AUROC) or the detector's per-example suspicion scores with the
indices it flags. For scores, poisonbench computes the metrics against the scenario's
poison mask, which it rebuilds from the suite without fine-tuning. Files are parsed as
JSON only, so nothing submitted is unpickled or executed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import InputError
from benchmark.metrics import detection_metrics
from benchmark.runner.sweep_config import Cell
from leaderboard.ranking import METRICS, RECORD_FIELDS
from leaderboard.suite import Suite

SCHEMA_PATH = Path(__file__).resolve().parent / "submission.schema.json"
"""The published schema of submission files (JSON Schema, draft 2020-12)."""


@cache
def submission_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Submission:
    """A schema-valid submission file: its detector and its raw per-scenario results."""

    path: Path
    suite_name: str
    suite_version: str
    detector: str
    track: str
    results: tuple[dict[str, Any], ...]

    @property
    def source(self) -> str:
        return f"submission {self.path.name}"


def _field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


class _NonFiniteError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteError(name)


def load_submission(path: str | Path) -> Submission:
    """Parse and validate a submission file against the schema.

    Raises:
        InputError: naming the file and the offending field (or the line and column of a
            JSON syntax error).
    """
    import jsonschema

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read the submission ({error.strerror})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteError as error:
        raise InputError(
            f"{path}: {error.args[0]} is not valid JSON; write null for an undefined AUROC"
        ) from None
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})"
        ) from None
    validator = jsonschema.Draft202012Validator(submission_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise InputError(
            f"{path}: field {_field_path(error.absolute_path)}: {error.message} "
            f"(schema: {SCHEMA_PATH.name})"
        )
    return Submission(
        path=path,
        suite_name=data["suite"]["name"],
        suite_version=data["suite"]["version"],
        detector=data["detector"]["name"],
        track=data["detector"]["track"],
        results=tuple(data["results"]),
    )


def submission_records(
    submission: Submission, suite: Suite, poison_mask: Callable[[Cell], np.ndarray]
) -> pd.DataFrame:
    """Check a submission against ``suite`` and return its records for ranking.

    ``poison_mask`` returns a scenario's poison mask, shape (n_train,); it is called only
    for results given as scores.

    Raises:
        InputError: for another suite or version, an unknown, repeated or missing scenario,
            scores of the wrong length, or a flagged index out of range. The message names
            the field.
    """
    where = submission.path
    if submission.suite_name != suite.info.name:
        raise InputError(
            f"{where}: field suite.name: {submission.suite_name!r} is not the suite being "
            f"ranked ({suite.info.name!r})"
        )
    if submission.suite_version != suite.info.version:
        raise InputError(
            f"{where}: field suite.version: results for version {submission.suite_version} "
            f"cannot be ranked on {suite.info.label}; rerun the detector on this version"
        )
    records = []
    seen: set[str] = set()
    for index, result in enumerate(submission.results):
        field = f"results[{index}]"
        scenario = result["scenario"]
        if scenario not in suite.scenario_ids:
            raise InputError(
                f"{where}: field {field}.scenario: unknown scenario {scenario!r} in "
                f"{suite.info.label}; see 'poisonbench sweep {suite.sweep.source} --list-cells'"
            )
        if scenario in seen:
            raise InputError(f"{where}: field {field}.scenario: {scenario!r} appears twice")
        seen.add(scenario)
        if "metrics" in result:
            metrics = {name: result["metrics"][name] for name in METRICS}
            if metrics["auroc"] is None:
                metrics["auroc"] = float("nan")
        else:
            metrics = _metrics_from_scores(
                result, poison_mask(suite.scenario(scenario)), where, field
            )
        records.append(
            {
                "scenario": scenario,
                "detector": submission.detector,
                "track": submission.track,
                "source": submission.source,
                **metrics,
            }
        )
    absent = [scenario for scenario in suite.scenario_ids if scenario not in seen]
    if absent:
        raise InputError(
            f"{where}: field results: {len(absent)} scenarios of {suite.info.label} have no "
            f"result, e.g. {absent[0]}; a submission must cover every scenario"
        )
    return pd.DataFrame.from_records(records, columns=list(RECORD_FIELDS))


def _metrics_from_scores(
    result: dict[str, Any], mask: np.ndarray, where: Path, field: str
) -> dict[str, float]:
    scores = np.asarray(result["scores"], dtype=np.float64)
    if scores.shape != mask.shape:
        raise InputError(
            f"{where}: field {field}.scores: {len(scores)} scores, but the scenario has "
            f"{len(mask)} training examples (one score per example, in training-set order)"
        )
    if not np.all(np.isfinite(scores)):
        raise InputError(f"{where}: field {field}.scores: every score must be finite")
    flagged = np.zeros(len(mask), dtype=bool)
    for position, example in enumerate(result["flagged"]):
        if example >= len(mask):
            raise InputError(
                f"{where}: field {field}.flagged[{position}]: index {example} is out of range "
                f"(the scenario has {len(mask)} training examples, indices 0-{len(mask) - 1})"
            )
        flagged[example] = True
    metrics = detection_metrics(scores, flagged, mask)
    return {name: getattr(metrics, name) for name in METRICS}
