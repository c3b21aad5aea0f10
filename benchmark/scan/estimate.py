"""Run-time estimate of a scan from one timed training step.

The unit of cost is ``t``, the measured seconds of one training step (forward and backward
pass) per example on this machine. The stage costs below are a rough model, not a
measurement of each stage:

* fine-tuning: ``epochs * n_train * t``.
* inference: a forward pass costs about ``t / 3``. Blind detectors need one pass for the
  representations and one for the final losses; STRIP needs one pass per perturbed copy.
* influence (only for detectors on the clean-queries track): EK-FAC factor fitting takes
  about ``3 * n_train * t`` (a covariance pass and a per-example gradient pass), scoring
  about ``2 * n_train * t`` plus ``2 * t`` per query and transformed query.

NOTE: the influence cost assumes that every ``nn.Linear`` is tracked, so it overestimates
when ``tracked_modules`` selects a few. On 300 SST-2 examples with MiniLM, the last layer
and the classifier tracked and 16 queries, influence took 2.7 min against 7.3 min
estimated, and the whole scan 8.3 min against 14.1 min (2 shared CPU cores).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

FORWARD_FRACTION = 1 / 3
FACTOR_PASSES = 3.0
SCORE_PASSES = 2.0
QUERY_PASSES = 2.0
STRIP_COPIES = 8


@dataclass(frozen=True)
class RunTimeEstimate:
    """Estimated seconds of each expensive stage, from ``seconds_per_example``."""

    seconds_per_example: float
    stage_seconds: dict[str, float]

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds.values())

    def describe(self) -> str:
        """Format the estimate as one sentence that calls it an estimate."""
        stages = ", ".join(
            f"{name} {format_duration(seconds)}" for name, seconds in self.stage_seconds.items()
        )
        return (
            f"Estimated run time: about {format_duration(self.total_seconds)} ({stages}). "
            f"This is an estimate from one timed training step "
            f"({self.seconds_per_example * 1000:.0f} ms per example on this machine); "
            "the actual time may differ by a factor of two or more, for example on a busy CPU."
        )


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as "42 s", "3.5 min" or "1.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def measure_step_seconds(victim, texts: Sequence[str], labels: Sequence[int]) -> float:
    """Return the seconds per example of one forward and backward pass over a batch.

    A warm-up pass on two examples runs first, because the first call of a model is slow.
    Gradients are discarded and no weights change. The pass consumes random numbers for
    dropout, which does not matter because every victim's ``fit`` reseeds torch.
    """
    model = victim.model
    collate = victim.collator()
    dataset = victim.make_dataset(texts, labels)
    model.train()
    try:
        timed = 0.0
        for size in (min(2, len(dataset)), len(dataset)):
            batch = collate([dataset[i] for i in range(size)])
            start = time.perf_counter()
            victim.batch_losses(batch).mean().backward()
            timed = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
    finally:
        model.eval()
    return timed / len(dataset)


def estimate_run_time(
    seconds_per_example: float,
    n_train: int,
    epochs: int,
    detector_tracks: dict[str, str],
    n_query_examples: int,
) -> RunTimeEstimate:
    """Estimate the seconds of fine-tuning, influence and detection (see the module docstring).

    ``detector_tracks`` maps each chosen detector to its track; ``n_query_examples`` counts
    the queries of every query set (original and transformed) together.
    """
    t = seconds_per_example
    stages = {"fine-tuning": epochs * n_train * t}
    if "clean-queries" in detector_tracks.values():
        stages["influence"] = (
            FACTOR_PASSES + SCORE_PASSES
        ) * n_train * t + QUERY_PASSES * n_query_examples * t
    forward_passes = 0.0
    if any(track == "blind" for track in detector_tracks.values()):
        forward_passes += 2
    if "strip" in detector_tracks:
        forward_passes += STRIP_COPIES
    if forward_passes:
        stages["detection"] = forward_passes * n_train * t * FORWARD_FRACTION
    return RunTimeEstimate(t, stages)
