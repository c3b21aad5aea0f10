"""Victim fine-tuning in one process (pinned numbers) and in two CPU processes with accelerate.

The two-process runs start ``accelerate launch --multi_gpu --num_processes 2`` with
``ACCELERATE_USE_CPU=true``: accelerate 1.16 then runs torchrun's launcher and gives each
process the gloo backend on the CPU. (``accelerate launch --cpu --num_processes 2`` starts
one process unless an MPI hostfile is given, so it cannot test two processes here.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.models import TrainingConfig, build_victim

# A training script that every launched process runs. Phase "order" trains with a
# learning rate of 1e-12 and dropout off, so the model stays at its initial weights and
# each recorded loss must equal that example's loss before training, at its own index.
# Phase "train" trains for real; DDP must leave the same weights in every process.
TRAINING_SCRIPT = """
import hashlib, json, os, sys

import numpy as np
import torch

from benchmark.data import load_sst2
from benchmark.models import TrainingConfig, build_victim

spec, options, data_dir, n_train, out_dir = (
    sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
)
torch.set_num_threads(1)
rank = int(os.environ["RANK"])
train, _ = load_sst2(data_dir)
train = train.sample(n_train, seed=0)


def new_victim():
    return build_victim(
        spec, 2, train.definition, train.label_names, max_length=40, seed=0, **options
    )


def digest(model):
    hasher = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


victim = new_victim()
for module in victim.model.modules():
    if isinstance(module, torch.nn.Dropout):
        module.p = 0.0
    if isinstance(getattr(module, "dropout", None), float):
        module.dropout = 0.0  # T5 attention calls functional dropout with this rate
if victim.family == "encoder":
    # The fresh head gives every example about the same loss, so scale it up to spread them.
    with torch.no_grad():
        victim.model.classifier.weight.mul_(100.0)
before = victim.example_losses(train.texts, train.labels)
order = victim.fit(
    train.texts,
    train.labels,
    TrainingConfig(epochs=2, batch_size=2, learning_rate=1e-12, max_length=40, seed=0),
)

victim = new_victim()
initial = digest(victim.model)
trained = victim.fit(
    train.texts,
    train.labels,
    TrainingConfig(epochs=2, batch_size=2, learning_rate=5e-3, max_length=40, seed=0),
)
np.savez(
    os.path.join(out_dir, f"rank{rank}.npz"),
    before=before,
    order_losses=order.epoch_losses,
    trained_losses=trained.epoch_losses,
)
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
    json.dump(
        {
            "world_size": int(os.environ["WORLD_SIZE"]),
            "initial": initial,
            "trained": digest(victim.model),
            "device": str(next(victim.model.parameters()).device),
        },
        handle,
    )
"""

# Trains tiny-bert in every launched process, then fits EK-FAC factors and scores one query
# set in each process, all sharing one cache folder. Rank 0 saves the trained weights.
INFLUENCE_SCRIPT = """
import os, sys

import numpy as np
import torch

from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.models import TrainingConfig, build_victim

data_dir, out_dir, cache_dir = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
rank = int(os.environ["RANK"])
train, test = load_sst2(data_dir)
train, queries = train.sample(12, seed=0), test.sample(4, seed=1)
victim = build_victim("tiny-bert", 2, train.definition, train.label_names, max_length=40)
victim.fit(
    train.texts,
    train.labels,
    TrainingConfig(epochs=1, batch_size=3, learning_rate=5e-3, max_length=40, seed=0),
)
engine = InfluenceEngine(
    victim, train.texts, train.labels, InfluenceConfig(factor_batch_size=4), cache_dir
)
torch.manual_seed(0)  # the true-Fisher factors sample labels from the model
scores = engine.score_many([QuerySet("queries", tuple(queries.texts), tuple(queries.labels))])
np.save(os.path.join(out_dir, f"scores{rank}.npy"), scores["queries"])
if rank == 0:
    torch.save(victim.state_dict(), os.path.join(out_dir, "weights.pt"))
"""

N_DISTRIBUTED_TRAIN = 11  # odd, so accelerate pads the last step with repeated examples

# epoch_losses of a single-process fit on 12 SST-2 examples (sample seed 0), recorded with
# the per-victim training loops that preceded benchmark.models.training (torch 2.13.0 CPU,
# transformers 5.25.0): the mean of each epoch and the first three losses of each epoch.
PINNED_CONFIG = TrainingConfig(epochs=2, batch_size=4, learning_rate=5e-3, max_length=40, seed=3)
PINNED = {
    ("tiny-bert", False): (
        [0.704185793797175, 0.694037859638532],
        [0.6952038407325745, 0.7027974724769592, 0.6912880539894104],
        [0.6705414056777954, 0.6655333042144775, 0.7318662405014038],
    ),
    ("tiny-causal", False): (
        [20.0609712600708, 18.870280901590984],
        [19.796894073486328, 20.680034637451172, 20.85778045654297],
        [18.85053253173828, 18.681631088256836, 18.83625030517578],
    ),
    ("tiny-causal", True): (
        [20.612871805826824, 20.113408883412678],
        [20.526775360107422, 20.680034637451172, 20.85778045654297],
        [19.978614807128906, 19.937580108642578, 20.1492862701416],
    ),
}


@pytest.mark.parametrize(("spec", "lora"), sorted(PINNED))
def test_single_process_fit_matches_pinned(spec, lora, shared_data):
    train, _ = load_sst2(shared_data)
    train = train.sample(12, seed=0)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = {"lora": True} if lora else {}
        victim = build_victim(
            spec, 2, train.definition, train.label_names, max_length=40, seed=3, **options
        )
        history = victim.fit(train.texts, train.labels, PINNED_CONFIG)
    finally:
        torch.set_num_threads(previous_threads)

    epoch_means, first_epoch, second_epoch = PINNED[(spec, lora)]
    assert history.epoch_losses.shape == (2, 12)
    np.testing.assert_allclose(history.epoch_losses.mean(axis=1), epoch_means, rtol=1e-5)
    np.testing.assert_allclose(history.epoch_losses[0, :3], first_epoch, rtol=1e-5)
    np.testing.assert_allclose(history.epoch_losses[1, :3], second_epoch, rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_two_processes(script_text: str, out_dir: Path, *arguments: str) -> None:
    script = out_dir / "launched.py"
    script.write_text(script_text)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate is not None, "accelerate's launcher is not installed next to python"
    command = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(script),
        *arguments,
    ]
    environment = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=900, check=False
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "options"),
    [("tiny-bert", {}), ("tiny-causal", {"template": "alpaca", "lora": True}), ("tiny-t5", {})],
)
def test_two_process_fit(spec, options, shared_data, tmp_path):
    _launch_two_processes(
        TRAINING_SCRIPT,
        tmp_path,
        spec,
        json.dumps(options),
        str(shared_data),
        str(N_DISTRIBUTED_TRAIN),
        str(tmp_path),
    )

    infos = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    results = [np.load(tmp_path / f"rank{rank}.npz") for rank in (0, 1)]
    assert [info["world_size"] for info in infos] == [2, 2]
    for info in infos:
        assert info["device"].startswith("cpu")

    for result in results:
        # One loss per training example and epoch, each at its example's index: with the
        # weights held still, the recorded loss equals the example's loss before training.
        assert result["order_losses"].shape == (2, N_DISTRIBUTED_TRAIN)
        assert result["trained_losses"].shape == (2, N_DISTRIBUTED_TRAIN)
        # The check can tell the indices apart: every cyclic shift of the losses moves
        # some of them by far more than the tolerance.
        before = result["before"]
        for shift in range(1, N_DISTRIBUTED_TRAIN):
            assert np.abs(np.roll(before, shift) - before).max() > 1e-3 * np.abs(before).max()
        for epoch in range(2):
            np.testing.assert_allclose(result["order_losses"][epoch], result["before"], rtol=2e-6)
        assert np.all(np.isfinite(result["trained_losses"]))
        assert np.all(result["trained_losses"] > 0)

    # Both processes gather every loss, and DDP keeps their weights equal.
    np.testing.assert_array_equal(results[0]["trained_losses"], results[1]["trained_losses"])
    assert infos[0]["trained"] == infos[1]["trained"]
    assert infos[0]["trained"] != infos[0]["initial"]


@pytest.mark.slow
def test_two_process_influence_matches_single(shared_data, tmp_path):
    _launch_two_processes(
        INFLUENCE_SCRIPT, tmp_path, str(shared_data), str(tmp_path), str(tmp_path / "cache")
    )
    launched = [np.load(tmp_path / f"scores{rank}.npy") for rank in (0, 1)]

    # The same trained weights, scored in this single process with a fresh cache.
    train, test = load_sst2(shared_data)
    train, queries = train.sample(12, seed=0), test.sample(4, seed=1)
    victim = build_victim("tiny-bert", 2, train.definition, train.label_names, max_length=40)
    victim.load_state_dict(torch.load(tmp_path / "weights.pt"))
    engine = InfluenceEngine(
        victim,
        train.texts,
        train.labels,
        InfluenceConfig(factor_batch_size=4),
        tmp_path / "single-cache",
    )
    query_set = QuerySet("queries", tuple(queries.texts), tuple(queries.labels))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes
    try:
        torch.manual_seed(0)
        single = engine.score_many([query_set])["queries"]
    finally:
        torch.set_num_threads(previous_threads)

    assert single.shape == (12,)
    assert np.abs(single).max() > 0
    for scores in launched:
        assert scores.shape == (12,)
        np.testing.assert_allclose(scores, single, rtol=1e-4, atol=1e-6 * np.abs(single).max())
    # Both processes stored factors under one key; exactly one factor folder remains.
    factor_folders = sorted((tmp_path / "cache" / "influence").glob("factors_*"))
    assert [folder.name for folder in factor_folders] == [f"factors_{engine.factors_key}"]
