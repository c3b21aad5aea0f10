"""Measure every attack on SST-2 with the default MiniLM victim.

Usage (about 2 minutes per attack on 2 CPU cores):

    python benchmarks/attack_success.py --data-dir ../shared/data [--attacks ner-dirty,badnets]
        [--ratio 0.03] [--seed 0] [--epochs 3] [--params '{"min_insertions": 3}']
        [--json attacks.json]

For each attack it poisons the default 1,000-example training sample, fine-tunes MiniLM with
the default training settings and reports the attack success rate (ASR) on triggered
negative test sentences, clean accuracy on the test split and how many poisons replaced a
real PERSON entity. A model trained on the same sample without poisons gives the clean
accuracy that attacks are compared with, and its ASR on the same triggered sentences
shows how often the trigger alone, without poisons, moves a prediction to the target. The
multi-form attack is also measured on its held-out trigger forms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from attacks import ATTACKS, get_attack
from attacks.evaluation import triggered_inputs
from benchmark.data import load_sst2
from benchmark.metrics import attack_success_rate, clean_accuracy
from benchmark.runner.config import ExperimentConfig
from benchmark.runner.pipeline import train_victim

NON_ADAPTIVE = (
    "ner-dirty",
    "ner-clean",
    "ner-dirty-countnorm",
    "multi-form",
    "badnets",
    "addsent",
    "syntactic",
    "ner-clean-random",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with sst2/train.tsv and test.tsv")
    parser.add_argument("--attacks", default=",".join(NON_ADAPTIVE), help="comma-separated names")
    parser.add_argument("--ratio", type=float, default=0.03, help="poison ratio (fraction)")
    parser.add_argument("--seed", type=int, default=0, help="experiment seed (sample and training)")
    parser.add_argument(
        "--epochs", type=int, help="fine-tuning epochs (default: the experiment default)"
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="JSON object of parameters for every listed attack, e.g. '{\"min_insertions\": 3}'",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = dataclasses.replace(ExperimentConfig(), seed=args.seed)
    if args.epochs is not None:
        training = dataclasses.replace(config.training, epochs=args.epochs)
        config = dataclasses.replace(config, training=training)
    train, test = load_sst2(args.data_dir)
    train = train.sample(config.data.n_train, config.seed)
    labels = np.array(test.labels)

    start = time.perf_counter()
    clean_model, _ = train_victim(config, train)
    clean_acc = clean_accuracy(clean_model.predict(test.texts), labels)
    rows = [
        {
            "attack": "none (clean data)",
            "asr": None,
            "clean_accuracy": clean_acc,
            "n_poisons": 0,
            "entity": 0,
            "insertion": 0,
            "seconds": time.perf_counter() - start,
        }
    ]

    for name in [n.strip() for n in args.attacks.split(",") if n.strip()]:
        if name not in ATTACKS:
            raise SystemExit(f"unknown attack {name!r}; known: {', '.join(ATTACKS.names())}")
        start = time.perf_counter()
        attack = get_attack(name, **args.params)
        poisoned = attack.poison(train, args.ratio, config.seed)
        victim, _ = train_victim(config, poisoned.dataset)
        inputs = triggered_inputs(attack, test, config.seed)
        methods = poisoned.method_counts()
        row = {
            "attack": name,
            "params": args.params,
            "ratio": args.ratio,
            "asr": attack_success_rate(victim.predict(inputs), attack.target_label),
            "asr_clean_model": attack_success_rate(
                clean_model.predict(inputs), attack.target_label
            ),
            "clean_accuracy": clean_accuracy(victim.predict(test.texts), labels),
            "n_poisons": poisoned.n_poisons,
            "entity": methods.get("entity", 0),
            "insertion": methods.get("insertion", 0),
        }
        if name == "multi-form":
            held_out = triggered_inputs(attack, test, config.seed, forms="held_out")
            row["asr_held_out_forms"] = attack_success_rate(
                victim.predict(held_out), attack.target_label
            )
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(
            f"{name}: ASR {row['asr']:.3f}, clean accuracy {row['clean_accuracy']:.3f}", flush=True
        )

    headers = [
        "attack",
        "ASR",
        "ASR, clean model",
        "clean acc.",
        "Δ clean acc. (points)",
        "poisons",
        "entity",
        "insertion",
        "ASR held-out forms",
    ]
    body = [
        [
            r["attack"],
            "" if r["asr"] is None else f"{r['asr']:.3f}",
            f"{r['asr_clean_model']:.3f}" if "asr_clean_model" in r else "",
            f"{r['clean_accuracy']:.3f}",
            f"{100 * (r['clean_accuracy'] - clean_acc):+.1f}",
            r["n_poisons"],
            r["entity"],
            r["insertion"],
            f"{r['asr_held_out_forms']:.3f}" if "asr_held_out_forms" in r else "",
        ]
        for r in rows
    ]
    print(tabulate(body, headers=headers, tablefmt="github"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
