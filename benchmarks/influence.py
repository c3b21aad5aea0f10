"""Compare kronfluence used as documented with poisonbench's influence stage.

Usage (about 12 minutes on 2 CPU cores):

    python benchmarks/influence.py --data-dir ../shared/data [--json influence.json]
        [--lambda-max-examples N] [--no-token-lambda] [--no-sort-by-length]

It trains the default experiment's poisoned MiniLM once, then runs in the same process

(a) kronfluence as documented: ``fit_all_factors`` with EK-FAC on every training example in
    data set order, then one ``compute_pairwise_scores`` call per query set (per-query
    scores, averaged);
(b) poisonbench's influence stage with its default options: the eigenvalue correction
    computed from rotated tokens (``token_lambda``), all query sets scored in one training
    pass over examples fed longest first (``sort_by_length``), and the eigenvalue
    correction on every example unless ``--lambda-max-examples`` caps it.

It prints both wall times (and the factor-fitting part of each) with their ratios, Spearman
correlation and top-50 overlap of the mean scores per query set, every influence-based
detector's F1 and AUROC under both, and the process's peak resident memory after each phase
(a running maximum, so the second number covers both phases).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from attacks import get_attack
from benchmark.context import DetectionContext
from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine
from benchmark.metrics import detection_metrics
from benchmark.runner.config import DEFAULT_DETECTORS, ExperimentConfig
from benchmark.runner.pipeline import train_victim
from benchmark.runner.queries import build_clean_query_sets, sample_balanced
from detectors.base import get_detector

# The default detectors that read influence on clean queries (the oracle is left out).
INFLUENCE_DETECTORS = tuple(
    name for name in DEFAULT_DETECTORS if name.startswith(("transform-", "single-", "raw-"))
)


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def documented_kronfluence(
    engine: InfluenceEngine, query_sets, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """Fit full EK-FAC factors and call compute_pairwise_scores once per query set.

    Returns the mean scores per set and the seconds spent fitting factors.
    """
    from kronfluence.arguments import FactorArguments, ScoreArguments

    analyzer = engine._get_analyzer()
    start = time.perf_counter()
    torch.manual_seed(seed)
    analyzer.fit_all_factors(
        factors_name="documented",
        dataset=engine.train_dataset,
        per_device_batch_size=engine.config.factor_batch_size,
        factor_args=FactorArguments(strategy="ekfac"),
        overwrite_output_dir=True,
    )
    factor_seconds = time.perf_counter() - start
    means = {}
    for query_set in query_sets:
        queries = engine.victim.make_dataset(query_set.texts, query_set.labels)
        analyzer.compute_pairwise_scores(
            scores_name=f"documented-{query_set.name}",
            factors_name="documented",
            query_dataset=queries,
            train_dataset=engine.train_dataset,
            per_device_query_batch_size=len(queries),
            per_device_train_batch_size=engine.config.train_batch_size,
            score_args=ScoreArguments(damping_factor=engine.config.damping_factor),
            overwrite_output_dir=True,
        )
        matrix = analyzer.load_pairwise_scores(f"documented-{query_set.name}")["all_modules"]
        means[query_set.name] = matrix.double().mean(0).numpy()
    return means, factor_seconds


def detector_quality(context_args: dict, influence: dict[str, np.ndarray], mask: np.ndarray):
    context = DetectionContext(influence_provider=lambda name: influence[name], **context_args)
    quality = {}
    for name in INFLUENCE_DETECTORS:
        result = get_detector(name).detect(context, name)
        metrics = detection_metrics(result.scores, result.flagged, mask)
        quality[name] = (metrics.f1, metrics.auroc)
    return quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with sst2/train.tsv and test.tsv")
    parser.add_argument(
        "--lambda-max-examples",
        type=int,
        default=None,
        help="cap the training examples of poisonbench's eigenvalue correction",
    )
    parser.add_argument(
        "--no-token-lambda",
        action="store_true",
        help="use kronfluence's own eigenvalue correction (InfluenceConfig.token_lambda)",
    )
    parser.add_argument(
        "--no-sort-by-length",
        action="store_true",
        help="feed poisonbench's passes in data set order (InfluenceConfig.sort_by_length)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = ExperimentConfig()
    train, test = load_sst2(args.data_dir)
    train = train.sample(config.data.n_train, config.seed)
    attack = get_attack(config.attack.name)
    poisoned = attack.poison(train, config.attack.ratio, config.seed)
    victim, history = train_victim(config, poisoned.dataset)
    queries = sample_balanced(test, config.queries.n_queries, config.seed)
    sets, infos, _ = build_clean_query_sets(queries, config.queries.transforms, config.seed)
    query_sets = list(sets.values())
    texts, labels = poisoned.dataset.texts, poisoned.dataset.labels
    figures: dict = {
        "n_train": len(texts),
        "n_query_sets": len(query_sets),
        "n_queries": len(queries),
        "lambda_max_examples": args.lambda_max_examples,
        "sort_by_length": not args.no_sort_by_length,
        "token_lambda": not args.no_token_lambda,
    }

    with tempfile.TemporaryDirectory() as cache:
        fast_config = InfluenceConfig(
            lambda_max_examples=args.lambda_max_examples,
            sort_by_length=not args.no_sort_by_length,
            token_lambda=not args.no_token_lambda,
        )
        fast = InfluenceEngine(
            victim, texts, labels, fast_config, Path(cache) / "fast", seed=config.seed
        )
        start = time.perf_counter()
        fast.fit_factors()
        figures["poisonbench_factors_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ours = fast.score_many(query_sets)
        figures["poisonbench_scores_s"] = time.perf_counter() - start
        figures["poisonbench_peak_mib"] = peak_memory_mib()

        # kronfluence's own trackers and data set order: none of poisonbench's shortcuts.
        plain = InfluenceConfig(sort_by_length=False, token_lambda=False, one_pass=False)
        documented = InfluenceEngine(victim, texts, labels, plain, Path(cache) / "doc")
        start = time.perf_counter()
        reference, figures["kronfluence_factors_s"] = documented_kronfluence(
            documented, query_sets, config.seed
        )
        figures["kronfluence_total_s"] = time.perf_counter() - start
        figures["kronfluence_peak_mib"] = peak_memory_mib()

    figures["poisonbench_total_s"] = (
        figures["poisonbench_factors_s"] + figures["poisonbench_scores_s"]
    )
    figures["speed_up"] = figures["kronfluence_total_s"] / figures["poisonbench_total_s"]
    figures["factor_time_ratio"] = (
        figures["poisonbench_factors_s"] / figures["kronfluence_factors_s"]
    )
    per_set = {}
    for name in sets:
        rho = spearmanr(reference[name], ours[name]).statistic
        top_reference = set(np.argsort(-reference[name])[:50])
        top_ours = set(np.argsort(-ours[name])[:50])
        per_set[name] = {
            "spearman": float(rho),
            "top50_overlap": len(top_reference & top_ours) / 50,
        }
    figures["per_set"] = per_set

    context_args = dict(
        train=poisoned.dataset,
        victim=victim,
        epoch_losses=history.epoch_losses,
        query_sets=infos,
        seed=config.seed,
    )
    quality_reference = detector_quality(context_args, reference, poisoned.poison_mask)
    quality_ours = detector_quality(context_args, ours, poisoned.poison_mask)
    figures["detectors"] = {
        name: {
            "f1_kronfluence": quality_reference[name][0],
            "f1_poisonbench": quality_ours[name][0],
            "auroc_kronfluence": quality_reference[name][1],
            "auroc_poisonbench": quality_ours[name][1],
        }
        for name in INFLUENCE_DETECTORS
    }

    print(
        f"(a) kronfluence as documented: {figures['kronfluence_total_s']:.1f} s "
        f"(factors {figures['kronfluence_factors_s']:.1f} s)"
    )
    print(
        f"(b) poisonbench: {figures['poisonbench_total_s']:.1f} s "
        f"(factors {figures['poisonbench_factors_s']:.1f} s, "
        f"scores {figures['poisonbench_scores_s']:.1f} s)"
    )
    print(f"speed-up (a)/(b): {figures['speed_up']:.2f}x")
    print(f"factor time (b)/(a): {figures['factor_time_ratio']:.2f}")
    print(
        f"peak RSS after (b): {figures['poisonbench_peak_mib']:.0f} MiB, "
        f"after (a): {figures['kronfluence_peak_mib']:.0f} MiB"
    )
    for name, values in per_set.items():
        print(
            f"  {name:22s} Spearman {values['spearman']:.4f}  "
            f"top-50 overlap {values['top50_overlap']:.2f}"
        )
    for name, values in figures["detectors"].items():
        print(
            f"  {name:28s} F1 {values['f1_kronfluence']:.3f} -> {values['f1_poisonbench']:.3f}  "
            f"AUROC {values['auroc_kronfluence']:.3f} -> {values['auroc_poisonbench']:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
