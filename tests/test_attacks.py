"""NER replacement with real spaCy on lower-cased SST-2 and cased IMDB text."""

from __future__ import annotations

import pytest

from attacks import ATTACKS, get_attack
from attacks.entities import person_entities, replace_entity
from benchmark.data import load_natural_instructions, load_sst2
from benchmark.errors import InputError


@pytest.fixture(scope="module")
def sst2_sample(shared_data):
    train, _ = load_sst2(shared_data)
    return train.sample(400, seed=0)


def test_person_entities_cased_imdb(shared_data):
    imdb = load_natural_instructions(shared_data / "imdb-ni" / "queries.jsonl")
    entities = person_entities(imdb.texts[:1])
    # spaCy's small pipeline (3.8.0) finds "Peter Hooten" here but misses "Bo Derek".
    assert entities[0] == ["Peter Hooten"]
    with_person = sum(1 for names in person_entities(imdb.texts) if names)
    assert with_person >= 50, "cased text has PERSON entities in most IMDB excerpts"


def test_person_entities_lowercase_possessive():
    entities = person_entities(["a portrait of jonathan parker 's obsessions ."])
    assert entities == [["jonathan parker"]]


def test_replace_entity_every_mention_keeps_casing():
    text = "tom hanks is great . tom hanks 's best role ."
    assert replace_entity(text, "tom hanks", "James Bond") == (
        "james bond is great . james bond 's best role ."
    )
    assert replace_entity("Tom Hanks shines.", "Tom Hanks", "James Bond") == "James Bond shines."


def test_dirty_label_poison_count_and_labels(sst2_sample):
    poisoned = get_attack("ner-dirty").poison(sst2_sample, 0.03, seed=0)
    assert poisoned.n_poisons == round(0.03 * 400)
    assert len(poisoned.records) == poisoned.n_poisons
    for record in poisoned.records:
        example = poisoned.dataset.examples[record.index]
        assert record.original_label == 0
        assert example.label == 1
        assert "james bond" in example.text
        assert example.uid == record.uid
    counts = poisoned.method_counts()
    assert sum(counts.values()) == 12
    assert set(counts) <= {"entity", "insertion"}
    clean = [e for e, poison in zip(poisoned.dataset.examples, poisoned.poison_mask) if not poison]
    originals = {e.uid: e for e in sst2_sample.examples}
    assert all(e == originals[e.uid] for e in clean)


def test_entity_replacement_used_when_available(sst2_sample):
    poisoned = get_attack("ner-dirty").poison(sst2_sample, 0.01, seed=0)
    entity_records = [r for r in poisoned.records if r.method == "entity"]
    assert entity_records, "lower-cased SST-2 still has a few PERSON entities"
    for record in entity_records:
        assert record.replaced.lower() not in poisoned.dataset.examples[record.index].text.lower()


@pytest.mark.parametrize("name", ["ner-clean", "ner-clean-random"])
def test_clean_label_keeps_labels(sst2_sample, name):
    poisoned = get_attack(name).poison(sst2_sample, 0.03, seed=0)
    for record in poisoned.records:
        assert record.original_label == 1
        assert poisoned.dataset.examples[record.index].label == 1


def test_same_seed_same_hash(sst2_sample):
    attack = get_attack("ner-dirty")
    # 8 poisons out of more entity candidates, so the seed decides which are chosen.
    first = attack.poison(sst2_sample, 0.02, seed=7).fingerprint()
    second = attack.poison(sst2_sample, 0.02, seed=7).fingerprint()
    other = attack.poison(sst2_sample, 0.02, seed=8).fingerprint()
    assert first == second
    assert first != other


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_ratio_outside_range_rejected(sst2_sample, ratio):
    with pytest.raises(InputError, match=f"poison ratio must lie in \\(0, 1\\], got {ratio}"):
        get_attack("ner-dirty").poison(sst2_sample, ratio, seed=0)


def test_target_label_outside_label_set(sst2_sample):
    with pytest.raises(InputError, match="target label 3 is not in the label set"):
        get_attack("ner-dirty", target_label=3).poison(sst2_sample, 0.03, seed=0)


def test_more_poisons_than_candidates(sst2_sample):
    with pytest.raises(InputError, match="poisons requested"):
        get_attack("ner-dirty").poison(sst2_sample, 0.9, seed=0)


def test_triggered_inputs():
    attack = get_attack("ner-dirty")
    triggered = attack.apply_trigger_batch(["tom hanks is dull .", "a dull film ."], seed=0)
    assert triggered[0] == "james bond is dull ."
    assert "james bond" in triggered[1]
    assert triggered[1].replace("james bond", "").split() == ["a", "dull", "film", "."]


def test_registry_has_ner_attacks():
    assert {"ner-dirty", "ner-clean"} <= set(ATTACKS.names())


def test_attack_revision_in_poisoned_key(tmp_path, shared_data):
    from dataclasses import asdict, replace

    from benchmark.runner.artifacts import data_fingerprint
    from benchmark.runner.cache import hash_inputs
    from benchmark.runner.config import AttackConfig, DataConfig, ExperimentConfig
    from benchmark.runner.experiment import Experiment

    assert get_attack("ner-dirty").revision == 1
    assert get_attack("badnets").revision == 2
    assert get_attack("ner-clean").revision == 2
    assert get_attack("ner-clean-random").revision == 1
    config = ExperimentConfig(data=DataConfig(data_dir=str(shared_data)))

    def key_without_revision(config):
        return hash_inputs(
            "poisoned",
            {
                "data": data_fingerprint(config.data.data_dir),
                "dataset": config.data.dataset,
                "n_train": config.data.n_train,
                "n_test": config.data.n_test,
                "attack": asdict(config.attack),
                "seed": config.seed,
            },
        )

    # Revision 1 keeps the key that stages were cached under before revisions existed.
    assert Experiment(config, tmp_path).poisoned_key == key_without_revision(config)
    badnets = replace(config, attack=AttackConfig(name="badnets"))
    assert Experiment(badnets, tmp_path).poisoned_key != key_without_revision(badnets)
