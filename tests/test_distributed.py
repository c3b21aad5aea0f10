"""Victim fine-tuning in one process (pinned numbers) and in two CPU processes with accelerate.

The two-process runs start ``accelerate launch --multi_gpu --num_processes 2`` with
``ACCELERATE_USE_CPU=true``: accelerate 1.16 then runs torchrun's launcher and gives each
process the gloo backend on the CPU. (``accelerate launch --cpu --num_processes 2`` starts
one process unless an MPI hostfile is given, so it cannot test two processes here.)
The influence tests compare such a launch with a plain single-process run of the same
script on the same trained weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence.distributed import (
    chunk_balanced_order,
    gather_shards,
    shard_of,
    sum_over_processes,
)
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

# Runs launched (two processes) or plain (one process). A launched run trains tiny-bert with
# DDP and the main process saves the weights; a plain run loads them. Both then compute
# influence with two engines: one whose task uses the empirical Fisher (the training
# labels), so that a single process and two processes fit the same factors, and one with
# the default task, which samples Fisher labels. The empirical task counts the batches and
# examples of every pass, which shows how the processes split the work.
INFLUENCE_SCRIPT = """
import json, logging, os, sys, time
from collections import Counter

import numpy as np
import torch

from benchmark.data import load_sst2
from benchmark.influence import ClassificationTask, InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.models import TrainingConfig, build_victim

data_dir, out_dir, weights_path = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
rank = int(os.environ.get("RANK", "0"))
run_name = f"{os.environ.get('WORLD_SIZE', '1')}-processes"  # the processes of a run share caches
prefix = os.path.join(out_dir, f"{run_name}-rank{rank}")
train, test = load_sst2(data_dir)
train, queries = train.sample(13, seed=0), test.sample(5, seed=1)
victim = build_victim("tiny-bert", 2, train.definition, train.label_names, max_length=40)
if os.path.exists(weights_path):
    victim.load_state_dict(torch.load(weights_path))
else:
    victim.fit(
        train.texts,
        train.labels,
        TrainingConfig(epochs=1, batch_size=3, learning_rate=5e-3, max_length=40, seed=0),
    )
    if rank == 0:
        torch.save(victim.state_dict(), weights_path)


class CountingEmpiricalTask(ClassificationTask):
    def __init__(self, measurement, tracked_modules):
        super().__init__(measurement, tracked_modules)
        self.counts = Counter()

    def compute_train_loss(self, batch, model, sample=False):
        kind = "fisher" if sample else "train"
        self.counts[kind + " batches"] += 1
        self.counts[kind + " examples"] += int(batch["labels"].shape[0])
        return super().compute_train_loss(batch, model, sample=False)

    def compute_measurement(self, batch, model):
        self.counts["query batches"] += 1
        self.counts["query examples"] += int(batch["labels"].shape[0])
        return super().compute_measurement(batch, model)


task = CountingEmpiricalTask("loss", None)
victim.influence_task = lambda measurement, tracked_modules: task
config = InfluenceConfig(factor_batch_size=2, train_batch_size=2, query_batch_size=2)
query_sets = [
    QuerySet("five", tuple(queries.texts), tuple(queries.labels)),
    QuerySet("one", (queries.texts[0],), (queries.labels[0],)),  # fewer queries than processes
]

engine = InfluenceEngine(
    victim, train.texts, train.labels, config, os.path.join(out_dir, f"cache-{run_name}")
)
counts, seconds = {}, {}
start = time.perf_counter()
factors_name = engine.fit_factors()
seconds["factors"] = time.perf_counter() - start
counts["factors"] = dict(task.counts)
task.counts.clear()
start = time.perf_counter()
many = engine.score_many(query_sets)
seconds["score_many"] = time.perf_counter() - start
counts["score_many"] = dict(task.counts)
task.counts.clear()
single = engine.score(query_sets[0])
counts["score"] = dict(task.counts)

analyzer = engine._get_analyzer()
factors = {
    **analyzer.load_covariance_matrices(factors_name),
    **analyzer.load_all_factors(factors_name),
}
np.savez(
    prefix + "-factors.npz",
    **{
        f"{factor}/{module}": tensor.numpy()
        for factor, modules in factors.items()
        for module, tensor in modules.items()
    },
)

del victim.influence_task  # back to the default task, which samples Fisher labels
sampled = InfluenceEngine(
    victim, train.texts, train.labels, config, os.path.join(out_dir, f"sampled-{run_name}")
)
sampled_scores = sampled.score_many(query_sets[:1])["five"]
np.savez(
    prefix + "-scores.npz",
    many_five=many["five"],
    many_one=many["one"],
    score_five=single,
    sampled_five=sampled_scores,
)
with open(prefix + ".json", "w") as handle:
    json.dump({"counts": counts, "seconds": seconds}, handle)
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


def _launch_two_processes(script_text: str, out_dir: Path, *arguments: str) -> str:
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
    return completed.stdout + completed.stderr


def _run_single_process(script_text: str, out_dir: Path, *arguments: str) -> str:
    script = out_dir / "plain.py"
    script.write_text(script_text)
    launcher_variables = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    environment = {
        name: value for name, value in os.environ.items() if name not in launcher_variables
    }
    environment.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    completed = subprocess.run(
        [sys.executable, str(script), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed.stdout + completed.stderr


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


@pytest.fixture(scope="module")
def influence_runs(shared_data, tmp_path_factory):
    """Run the influence script in two launched processes, then in one plain process."""
    out_dir = tmp_path_factory.mktemp("influence")
    weights = out_dir / "weights.pt"
    arguments = (str(shared_data), str(out_dir), str(weights))
    launched_log = _launch_two_processes(INFLUENCE_SCRIPT, out_dir, *arguments)
    assert weights.is_file()
    _run_single_process(INFLUENCE_SCRIPT, out_dir, *arguments)

    def load(world_size: int, rank: int) -> dict:
        prefix = out_dir / f"{world_size}-processes-rank{rank}"
        return {
            "factors": dict(np.load(f"{prefix}-factors.npz")),
            "scores": dict(np.load(f"{prefix}-scores.npz")),
            **json.loads(Path(f"{prefix}.json").read_text()),
        }

    return {
        "launched": [load(2, 0), load(2, 1)],
        "single": load(1, 0),
        "log": launched_log,
        "out_dir": out_dir,
    }


def _assert_close(actual: np.ndarray, expected: np.ndarray, name: str, tolerance: float) -> None:
    """Assert that ``actual`` is within ``tolerance`` times the largest ``expected`` value."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=0.0, atol=tolerance * scale, err_msg=f"{name} differs"
    )


@pytest.mark.slow
def test_two_process_factors_match_single(influence_runs):
    first, second = influence_runs["launched"]
    single = influence_runs["single"]["factors"]
    assert sorted(first["factors"]) == sorted(single)
    assert sorted(second["factors"]) == sorted(single)
    for name, tensor in first["factors"].items():
        np.testing.assert_array_equal(second["factors"][name], tensor, err_msg=name)

    # Eigenvectors are defined up to sign, so compare what the eigenbasis does not change:
    # the covariances and example counts, the eigenvalues and the Lambda matrices.
    compared = set()
    for name, expected in single.items():
        if "eigenvectors" in name:
            continue
        _assert_close(first["factors"][name], expected, name, 1e-5)
        compared.add(name.split("/")[0])
    assert {"activation_covariance", "gradient_covariance", "lambda_matrix"} <= compared


@pytest.mark.slow
def test_two_process_scores_match_single(influence_runs):
    launched = [run["scores"] for run in influence_runs["launched"]]
    single = influence_runs["single"]["scores"]
    # The factors differ from the single-process ones by float32 rounding (the covariances
    # are summed in another order), and the damped inverse of EK-FAC enlarges that to
    # about 3e-5 of the largest score.
    for name in ("many_five", "many_one", "score_five"):
        assert single[name].shape == (13,)
        assert np.abs(single[name]).max() > 0
        np.testing.assert_array_equal(launched[1][name], launched[0][name], err_msg=name)
        _assert_close(launched[0][name], single[name], name, 1e-4)
    # one_pass and kronfluence's own pairwise scores agree under the launch too.
    _assert_close(launched[0]["score_five"], launched[0]["many_five"], "score vs score_many", 1e-4)


@pytest.mark.slow
def test_two_process_sampled_fisher_ranks_agree(influence_runs):
    """With sampled Fisher labels the processes draw other labels than a single process.

    The scores then differ from the single-process ones, but both processes must return
    the same scores, from one factor folder.
    """
    first, second = (run["scores"]["sampled_five"] for run in influence_runs["launched"])
    assert first.shape == (13,)
    assert np.all(np.isfinite(first))
    np.testing.assert_array_equal(second, first)
    single = influence_runs["single"]["scores"]["sampled_five"]
    assert np.corrcoef(first, single)[0, 1] > 0.9
    # One shared cache: one finished factor folder, no partial one, no leftover scores.
    cache = influence_runs["out_dir"] / "sampled-2-processes" / "influence"
    folders = [folder.name for folder in cache.glob("factors_*")]
    assert len(folders) == 1, folders
    assert "partial" not in folders[0], folders
    assert not list(cache.glob("scores_*"))


@pytest.mark.slow
def test_two_process_influence_splits_work(influence_runs):
    launched = [run["counts"] for run in influence_runs["launched"]]
    single = influence_runs["single"]["counts"]

    # Factor fitting (the covariance and Lambda passes) and the one-pass scoring: every
    # example goes to exactly one process, 7 and 6 of the 13 training examples.
    for phase, kind in (("factors", "fisher"), ("score_many", "train"), ("score_many", "query")):
        examples = [counts[phase].get(f"{kind} examples", 0) for counts in launched]
        batches = [counts[phase].get(f"{kind} batches", 0) for counts in launched]
        assert sum(examples) == single[phase][f"{kind} examples"], (phase, kind, examples)
        assert sum(batches) == single[phase][f"{kind} batches"], (phase, kind, batches)
        assert max(batches) <= single[phase][f"{kind} batches"] // 2 + 1, (phase, kind, batches)
    assert [counts["factors"]["fisher examples"] for counts in launched] == [14, 12]
    assert [counts["score_many"]["train batches"] for counts in launched] == [4, 3]
    # Queries: 3 + 2 of the set of five, and the single query of the other set on process 0.
    assert [counts["score_many"]["query examples"] for counts in launched] == [4, 2]

    # kronfluence's own pairwise scores pad the training set to 14 examples, 7 per process.
    assert [counts["score"]["train examples"] for counts in launched] == [7, 7]
    assert single["score"]["train examples"] == 13

    log = influence_runs["log"]
    assert "Process 0 scored 7 of the 13 training examples in 4 batches" in log
    assert "Process 1 scored 6 of the 13 training examples in 3 batches" in log


def _sharding_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """Gather strided shards and sum tensors in a gloo group of ``world_size`` processes."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        state = SimpleNamespace(
            use_distributed=True,
            process_index=rank,
            num_processes=world_size,
            device=torch.device("cpu"),
            is_main_process=rank == 0,
        )
        results = {}
        for size in SHARDED_SIZES:
            shard = shard_of(size, state)
            # Row r contains index * 10 + r, so gathered rows must count up in index order.
            values = torch.tensor(
                [[index * 10.0 + row for index in shard.indices] for row in range(2)]
            )
            results[f"gathered {size}"] = gather_shards(values, shard, state)
            results[f"indices {size}"] = torch.tensor(shard.indices, dtype=torch.int64)
        # Only the main process has a tensor for "sparse", as when a query set has one query.
        summed = sum_over_processes(
            {
                "dense": torch.full((2, 3), float(rank + 1)),
                "sparse": torch.ones(4, dtype=torch.float64) if rank == 0 else None,
            },
            state,
        )
        results.update({f"summed {name}": tensor for name, tensor in summed.items()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


SHARDED_SIZES = (2, 7, 9)


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_gather_into_index_order(world_size, tmp_path):
    torch.multiprocessing.start_processes(
        _sharding_worker,
        args=(world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
        start_method="spawn",
    )
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world_size)]

    for size in SHARDED_SIZES:
        # Disjoint shards that cover every index once, whether or not the size divides.
        indices = torch.cat([result[f"indices {size}"] for result in results])
        assert sorted(indices.tolist()) == list(range(size))
        expected = torch.stack([torch.arange(size) * 10.0 + row for row in range(2)])
        for result in results:
            torch.testing.assert_close(result[f"gathered {size}"], expected, rtol=0, atol=0)

    dense_sum = float(sum(range(1, world_size + 1)))
    for result in results:
        torch.testing.assert_close(result["summed dense"], torch.full((2, 3), dense_sum))
        torch.testing.assert_close(result["summed sparse"], torch.ones(4, dtype=torch.float64))


def test_chunk_balanced_order_makes_chunks_strided():
    order = chunk_balanced_order(7, 2)
    assert order.tolist() == [0, 2, 4, 6, 1, 3, 5]
    assert sorted(chunk_balanced_order(10, 3).tolist()) == list(range(10))
    # A single process keeps the identity, so its scores come back unpermuted.
    assert chunk_balanced_order(5, 1).tolist() == [0, 1, 2, 3, 4]
