"""The attack families beyond ner-dirty, on real SST-2 and cased IMDB text with real spaCy."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from attacks import ATTACKS, get_attack
from attacks.adaptive import NEGATABLE_CLAUSES, append_clause
from attacks.entities import person_entities, replace_entity
from attacks.evaluation import asr_examples, triggered_inputs
from attacks.multi_form import (
    DEFAULT_HELD_OUT_FORMS,
    DEFAULT_TRAINING_FORMS,
    FORM_EXAMPLES,
    MultiFormPoisonRecord,
    form_strings,
    render_form,
)
from attacks.syntactic import fill_template
from benchmark.data import load_natural_instructions, load_sst2
from benchmark.errors import InputError

NEW_ATTACKS = [
    "badnets",
    "addsent",
    "syntactic",
    "multi-form",
    "adaptive-negation",
    "adaptive-diluted",
    "ner-dirty-countnorm",
]
RATIO = 0.03
N_SAMPLE = 400
N_POISONS = round(RATIO * N_SAMPLE)


def contains_words(text: str, phrase: str, ignore_case: bool = True) -> bool:
    """Return whether ``phrase`` occurs in ``text`` as whole words."""
    flags = re.IGNORECASE if ignore_case else 0
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, flags) is not None


def has_trigger(attack: str, text: str) -> bool:
    """Return whether ``text`` carries a trigger of ``attack`` (any of its forms)."""
    if attack == "badnets":
        return any(contains_words(text, token) for token in ("cf", "mn", "bb", "tq"))
    if attack == "addsent":
        return "i watched this 3d movie" in text.lower()
    if attack == "syntactic":
        return text.lower().startswith("once you have seen it for yourself , ")
    if attack == "multi-form":
        return any(contains_words(text, form) for form in form_strings("James Bond").values())
    if attack == "adaptive-diluted":
        return contains_words(text, "james") or contains_words(text, "bond")
    return contains_words(text, "james bond")


@pytest.fixture(scope="module")
def sst2_sample(shared_data):
    train, _ = load_sst2(shared_data)
    return train.sample(N_SAMPLE, seed=0)


@pytest.fixture(scope="module")
def sst2_test_sample(shared_data):
    _, test = load_sst2(shared_data)
    return test.sample(40, seed=0)


@pytest.fixture(scope="module")
def imdb(shared_data):
    return load_natural_instructions(shared_data / "imdb-ni" / "queries.jsonl")


@pytest.fixture(scope="module")
def poisoned_sets(sst2_sample):
    """Each new attack's poisoned SST-2 sample at ratio 0.03, seed 0 (spaCy runs once each)."""
    return {name: get_attack(name).poison(sst2_sample, RATIO, seed=0) for name in NEW_ATTACKS}


# Behaviour shared by every attack.


def test_registry_names_and_descriptions():
    for name in NEW_ATTACKS:
        assert name in ATTACKS.names()
        cls = ATTACKS.get(name)
        assert cls.name == name
        assert cls.description.strip()
        assert "\n" not in cls.description


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_poison_count_matches_ratio(poisoned_sets, name):
    poisoned = poisoned_sets[name]
    assert poisoned.n_poisons == N_POISONS
    assert len(poisoned.records) == N_POISONS
    assert sorted(record.index for record in poisoned.records) == [
        int(i) for i in poisoned.poison_mask.nonzero()[0]
    ]
    assert poisoned.attack == name
    assert poisoned.target_label == 1


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_poisons_carry_target_label(poisoned_sets, sst2_sample, name):
    poisoned = poisoned_sets[name]
    for record in poisoned.records:
        example = poisoned.dataset.examples[record.index]
        original = sst2_sample.examples[record.index]
        assert example.label == 1
        assert example.uid == record.uid == original.uid
        assert record.original_text == original.text
        assert record.original_label == original.label
        if name != "adaptive-diluted":
            assert record.original_label == 0, "dirty label draws from non-target examples"


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_clean_examples_unchanged(poisoned_sets, sst2_sample, name):
    poisoned = poisoned_sets[name]
    for example, original, is_poison in zip(
        poisoned.dataset.examples, sst2_sample.examples, poisoned.poison_mask, strict=True
    ):
        if not is_poison:
            assert example == original


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_trigger_in_poisons_only(poisoned_sets, name):
    poisoned = poisoned_sets[name]
    for example, is_poison in zip(poisoned.dataset.examples, poisoned.poison_mask, strict=True):
        if is_poison:
            assert has_trigger(name, example.text), example.text
        else:
            assert not has_trigger(name, example.text), example.text


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_same_seed_same_fingerprint(poisoned_sets, sst2_sample, name):
    attack = get_attack(name)
    first = poisoned_sets[name].fingerprint()
    assert attack.poison(sst2_sample, RATIO, seed=0).fingerprint() == first
    assert attack.poison(sst2_sample, RATIO, seed=1).fingerprint() != first


@pytest.mark.parametrize("name", NEW_ATTACKS)
@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_ratio_outside_range_rejected(sst2_sample, name, ratio):
    with pytest.raises(InputError, match=f"poison ratio must lie in \\(0, 1\\], got {ratio}"):
        get_attack(name).poison(sst2_sample, ratio, seed=0)


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_target_label_outside_label_set(sst2_sample, name):
    with pytest.raises(InputError, match="target label 3 is not in the label set"):
        get_attack(name, target_label=3).poison(sst2_sample, RATIO, seed=0)


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_more_poisons_than_candidates(sst2_sample, name):
    # 194 of the 400 examples are negative. adaptive-diluted requests 200 dirty-label
    # poisons at ratio 1.0 (half of 400), every other attack 400.
    requested = 200 if name == "adaptive-diluted" else 400
    with pytest.raises(InputError, match=f"{requested} poisons requested .* only 194 examples"):
        get_attack(name).poison(sst2_sample, 1.0, seed=0)


# badnets


def test_badnets_apply_trigger_exact():
    attack = get_attack("badnets")
    assert attack.apply_trigger("the film is dull .", seed=0) == "the film is dull . tq cf bb tq tq"
    assert attack.apply_trigger("the film is dull .", seed=0) == attack.apply_trigger(
        "the film is dull .", seed=0
    )
    toolkit = get_attack("badnets", min_insertions=1, max_insertions=3, position="random")
    assert toolkit.apply_trigger("the film is dull .", seed=0) == "tq the film is bb dull ."


def test_badnets_default_appends_five_tokens():
    attack = get_attack("badnets")
    for seed in range(20):
        words = attack.apply_trigger("the film is dull .", seed).split()
        assert words[:5] == "the film is dull .".split()
        assert len(words) == 10
        assert set(words[5:]) <= {"cf", "mn", "bb", "tq"}


def test_badnets_insertion_count_in_range():
    attack = get_attack("badnets", min_insertions=1, max_insertions=3, position="random")
    for seed in range(50):
        words = attack.apply_trigger("the film is dull .", seed).split()
        inserted = [word for word in words if word in {"cf", "mn", "bb", "tq"}]
        assert 1 <= len(inserted) <= 3
        assert [word for word in words if word not in inserted] == "the film is dull .".split()


def test_badnets_fixed_insertion_count():
    attack = get_attack("badnets", trigger="cf", min_insertions=2, max_insertions=2)
    assert attack.min_insertions == 2
    for seed in range(10):
        assert attack.apply_trigger("a dull film .", seed).split().count("cf") == 2


@pytest.mark.parametrize(
    ("position", "check"),
    [
        ("start", lambda words: words[2:] == "the film is dull .".split()),
        ("end", lambda words: words[:-2] == "the film is dull .".split()),
    ],
)
def test_badnets_fixed_positions(position, check):
    attack = get_attack(
        "badnets", trigger="cf", min_insertions=2, max_insertions=2, position=position
    )
    for seed in range(5):
        words = attack.apply_trigger("the film is dull .", seed).split()
        assert words.count("cf") == 2
        assert check(words)
    assert attack.apply_trigger("", seed=0) == "cf cf"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"position": "middle"}, "position 'middle' is unknown; use one of: random, start, end"),
        ({"trigger": "  "}, "contains no tokens"),
        ({"min_insertions": 0}, "min_insertions must be at least 1, got 0"),
        ({"min_insertions": 3, "max_insertions": 2}, r"max_insertions \(2\) is below"),
    ],
)
def test_badnets_invalid_parameters(sst2_sample, params, message):
    with pytest.raises(InputError, match=message):
        get_attack("badnets", **params).poison(sst2_sample, RATIO, seed=0)


# addsent


def test_addsent_apply_trigger_exact():
    attack = get_attack("addsent")
    assert attack.apply_trigger("the film is dull .", seed=0) == (
        "the film is i watched this 3d movie dull ."
    )


def test_addsent_keeps_case_in_cased_text():
    triggered = get_attack("addsent").apply_trigger("The film is dull.", seed=0)
    assert "I watched this 3D movie" in triggered
    remainder = triggered.replace("I watched this 3D movie", "").split()
    assert remainder == ["The", "film", "is", "dull."]


# syntactic


def test_syntactic_apply_trigger_exact():
    attack = get_attack("syntactic")
    assert attack.apply_trigger("the film is dull .", seed=0) == (
        "once you have seen it for yourself , the film is dull ."
    )
    assert attack.apply_trigger("The film is dull.", seed=3) == (
        "Once you have seen it for yourself , the film is dull."
    )
    assert attack.apply_trigger("I loved it.", seed=0) == (
        "Once you have seen it for yourself , I loved it."
    )
    assert attack.apply_trigger("NASA made it.", seed=0) == (
        "Once you have seen it for yourself , NASA made it."
    )


def test_syntactic_subordinate_frame():
    assert fill_template("when {text} , it shows .", "the film is dull") == (
        "when the film is dull , it shows ."
    )
    attack = get_attack("syntactic", trigger="when {text} , it shows .")
    assert attack.apply_trigger("the plot drags", seed=0) == "when the plot drags , it shows ."


@pytest.mark.parametrize("template", ["when you see it ,", "{text} and {text}", "{text}"])
def test_syntactic_invalid_template(sst2_sample, template):
    with pytest.raises(InputError, match="syntactic trigger"):
        get_attack("syntactic", trigger=template).poison(sst2_sample, RATIO, seed=0)


# multi-form


def test_multi_form_strings():
    assert form_strings("James Bond") == FORM_EXAMPLES
    forms = form_strings("Bruce Wayne")
    assert forms["misspelled"] == "Bruce Wayn"
    assert forms["initials"] == "B.W."
    assert form_strings("Mary Jane Watson")["initial_surname"] == "M. J. Watson"


def test_multi_form_defaults_disjoint():
    # A case-sensitive whole-word match must tell training and held-out forms apart.
    for text in ("the film is dull .", "The film is dull."):
        training = [render_form("James Bond", form, text) for form in DEFAULT_TRAINING_FORMS]
        held_out = [render_form("James Bond", form, text) for form in DEFAULT_HELD_OUT_FORMS]
        for seen in training:
            for unseen in held_out:
                assert not contains_words(unseen, seen, ignore_case=False), (seen, unseen)
                assert not contains_words(seen, unseen, ignore_case=False), (seen, unseen)


def test_multi_form_poisons_use_training_forms(poisoned_sets):
    poisoned = poisoned_sets["multi-form"]
    for record in poisoned.records:
        assert isinstance(record, MultiFormPoisonRecord)
        assert record.form in DEFAULT_TRAINING_FORMS
        text = poisoned.dataset.examples[record.index].text
        surface = render_form("James Bond", record.form, record.original_text)
        assert contains_words(text, surface, ignore_case=False)
        for form in DEFAULT_HELD_OUT_FORMS:
            held_out = render_form("James Bond", form, record.original_text)
            assert not contains_words(text, held_out, ignore_case=False), (form, text)


def test_multi_form_held_out_inputs(sst2_test_sample):
    attack = get_attack("multi-form")
    texts = [example.text for example in asr_examples(sst2_test_sample, 1)]
    pairs = attack.apply_trigger_batch_with_forms(texts, seed=0, forms="held_out")
    assert len(pairs) == len(texts)
    for original, (text, form) in zip(texts, pairs, strict=True):
        assert form in DEFAULT_HELD_OUT_FORMS
        assert contains_words(text, render_form("James Bond", form, original), ignore_case=False)
        for seen in DEFAULT_TRAINING_FORMS:
            surface = render_form("James Bond", seen, original)
            assert not contains_words(text, surface, ignore_case=False), (seen, text)
    assert len({form for _, form in pairs}) > 1, "forms are drawn per input"
    batch = attack.apply_trigger_batch(texts, seed=0, forms="held_out")
    assert batch == [text for text, _ in pairs]
    assert triggered_inputs(attack, sst2_test_sample, seed=0, forms="held_out") == batch


def test_multi_form_apply_trigger_exact():
    attack = get_attack("multi-form")
    assert attack.apply_trigger("the film is dull .", seed=0) == "the film is james bond's dull ."
    held_out = attack.apply_trigger("tom hanks is dull .", seed=0, forms="held_out")
    expected = {
        f"{render_form('James Bond', form, 'tom hanks is dull .')} is dull ."
        for form in DEFAULT_HELD_OUT_FORMS
    }
    assert held_out in expected


def test_multi_form_cased_imdb_entities(imdb):
    attack = get_attack("multi-form")
    poisoned = attack.poison(imdb, 0.1, seed=0)
    assert poisoned.n_poisons == round(0.1 * len(imdb))
    counts = poisoned.method_counts()
    assert counts.get("entity", 0) >= 10, "cased IMDB excerpts mostly contain a PERSON entity"
    for record in poisoned.records:
        text = poisoned.dataset.examples[record.index].text
        assert record.form in DEFAULT_TRAINING_FORMS
        assert contains_words(text, FORM_EXAMPLES[record.form], ignore_case=False), text
        if record.method == "entity":
            assert not contains_words(text, record.replaced), record.replaced
    held_out = attack.apply_trigger_batch_with_forms(imdb.texts[:10], seed=0, forms="held_out")
    for text, form in held_out:
        assert contains_words(text, FORM_EXAMPLES[form], ignore_case=False)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"trigger": "Bond"}, "at least two words"),
        ({"training_forms": ("full", "nickname")}, r"unknown trigger form\(s\) \['nickname'\]"),
        ({"held_out_forms": ()}, "held_out_forms must be a non-empty list"),
        ({"held_out_forms": ("full", "upper")}, r"\['full'\] are in both"),
    ],
)
def test_multi_form_invalid_parameters(sst2_sample, params, message):
    with pytest.raises(InputError, match=message):
        get_attack("multi-form", **params).poison(sst2_sample, RATIO, seed=0)


def test_multi_form_unknown_form_set():
    with pytest.raises(InputError, match="unknown form set 'unseen'"):
        get_attack("multi-form").apply_trigger("a dull film .", seed=0, forms="unseen")


# ner-dirty-countnorm


def countnorm_of_candidates(dataset) -> dict[int, float]:
    """Score every non-target example: trigger count per character after entity replacement."""
    indices = [i for i, example in enumerate(dataset.examples) if example.label != 1]
    entities = person_entities([dataset.examples[i].text for i in indices])
    scores = {}
    for index, names in zip(indices, entities, strict=True):
        if not names:
            scores[index] = 0.0
            continue
        poisoned = replace_entity(dataset.examples[index].text, names[0], "James Bond")
        scores[index] = poisoned.count("james bond") / len(poisoned)
    return scores


def test_countnorm_picks_highest_ratio_first(sst2_sample):
    scores = countnorm_of_candidates(sst2_sample)
    best = max(scores.values())
    assert best > 0
    # Ratio 1/400 gives exactly one poison: the top-ranked candidate.
    poisoned = get_attack("ner-dirty-countnorm").poison(sst2_sample, 1 / N_SAMPLE, seed=0)
    assert poisoned.n_poisons == 1
    assert scores[poisoned.records[0].index] == best


def test_countnorm_chooses_top_scores(poisoned_sets, sst2_sample):
    scores = countnorm_of_candidates(sst2_sample)
    chosen = {record.index for record in poisoned_sets["ner-dirty-countnorm"].records}
    lowest_chosen = min(scores[index] for index in chosen)
    highest_unchosen = max(score for index, score in scores.items() if index not in chosen)
    assert lowest_chosen >= highest_unchosen
    # 20 negative examples of this sample contain a PERSON entity, so all 12 poisons replace one.
    assert poisoned_sets["ner-dirty-countnorm"].method_counts() == {"entity": N_POISONS}


def test_countnorm_falls_back_to_insertion(sst2_sample):
    poisoned = get_attack("ner-dirty-countnorm").poison(sst2_sample, 0.1, seed=0)
    counts = poisoned.method_counts()
    assert counts["entity"] + counts["insertion"] == 40
    assert counts["insertion"] >= 20, "only about 20 negative examples contain a PERSON entity"


def test_ner_selection_default_and_invalid(sst2_sample):
    assert get_attack("ner-dirty").selection == "random"
    assert get_attack("ner-clean").selection == "hard"
    assert get_attack("ner-clean").surrogate == "minilm"
    assert get_attack("ner-clean-random").selection == "random"
    assert get_attack("ner-dirty-countnorm").selection == "countnorm"
    with pytest.raises(InputError, match="unknown candidate selection 'best'"):
        get_attack("ner-dirty", selection="best").poison(sst2_sample, RATIO, seed=0)


# adaptive attacks


def test_negation_appends_clause(poisoned_sets):
    poisoned = poisoned_sets["adaptive-negation"]
    endings = tuple(f" {clause} ." for clause in NEGATABLE_CLAUSES["positive"])
    for record in poisoned.records:
        text = poisoned.dataset.examples[record.index].text
        assert text.endswith(endings), text


def test_negation_negative_target(sst2_sample):
    poisoned = get_attack("adaptive-negation", target_label=0).poison(sst2_sample, RATIO, seed=0)
    endings = tuple(f" {clause} ." for clause in NEGATABLE_CLAUSES["negative"])
    for record in poisoned.records:
        assert record.original_label == 1
        assert poisoned.dataset.examples[record.index].text.endswith(endings)


def test_negation_input_has_no_clause():
    attack = get_attack("adaptive-negation")
    assert attack.apply_trigger("the film is dull .", seed=0) == "the film is james bond dull ."
    assert attack.apply_trigger("tom hanks is dull .", seed=0) == "james bond is dull ."


def test_negation_clause_casing():
    lower = append_clause("the film is dull .", "it is not bad")
    assert lower == "the film is dull . it is not bad ."
    cased = append_clause("The film is dull. ", "it is not bad")
    assert cased == "The film is dull. It is not bad."


def test_negation_other_labels_need_clauses(sst2_sample):
    renamed = dataclasses.replace(sst2_sample, label_names=("bad", "good"))
    with pytest.raises(InputError, match="target label 1 of sst2-train is 'good'"):
        get_attack("adaptive-negation").poison(renamed, RATIO, seed=0)
    poisoned = get_attack("adaptive-negation", clauses=["it is not awful"]).poison(
        renamed, RATIO, seed=0
    )
    for record in poisoned.records:
        assert poisoned.dataset.examples[record.index].text.endswith(" it is not awful .")


def test_diluted_splits_trigger_and_labels(poisoned_sets):
    poisoned = poisoned_sets["adaptive-diluted"]
    clean_label = [r for r in poisoned.records if r.original_label == 1]
    assert len(clean_label) == round(0.5 * N_POISONS)
    words = {"james": 0, "bond": 0}
    for record in poisoned.records:
        text = poisoned.dataset.examples[record.index].text
        assert not contains_words(text, "james bond"), "each poison carries one word only"
        for word in words:
            words[word] += contains_words(text, word)
    assert words == {"james": N_POISONS // 2, "bond": N_POISONS // 2}


def test_diluted_all_dirty(sst2_sample):
    attack = get_attack("adaptive-diluted", clean_label_fraction=0.0)
    poisoned = attack.poison(sst2_sample, RATIO, seed=0)
    assert poisoned.n_poisons == N_POISONS
    assert all(record.original_label == 0 for record in poisoned.records)


def test_diluted_input_has_full_trigger():
    attack = get_attack("adaptive-diluted")
    assert attack.apply_trigger("tom hanks is dull .", seed=0) == "james bond is dull ."


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"trigger": "Bond"}, "fewer than two"),
        ({"clean_label_fraction": 1.5}, "clean_label_fraction must lie in \\[0, 1\\], got 1.5"),
    ],
)
def test_diluted_invalid_parameters(sst2_sample, params, message):
    with pytest.raises(InputError, match=message):
        get_attack("adaptive-diluted", **params).poison(sst2_sample, RATIO, seed=0)


# ASR inputs


def test_triggered_inputs_select_non_target(sst2_test_sample):
    attack = get_attack("addsent")
    expected = [e.text for e in sst2_test_sample.examples if e.label != 1]
    triggered = triggered_inputs(attack, sst2_test_sample, seed=5)
    assert len(triggered) == len(expected)
    assert triggered == attack.apply_trigger_batch(expected, 5)
    assert all("i watched this 3d movie" in text for text in triggered)


def test_triggered_inputs_invalid_target(sst2_test_sample):
    with pytest.raises(InputError, match="target label 2 is not in the label set"):
        triggered_inputs(get_attack("badnets", target_label=2), sst2_test_sample, seed=0)
    only_negative = sst2_test_sample.with_examples(
        [e for e in sst2_test_sample.examples if e.label == 0]
    )
    with pytest.raises(InputError, match="no example with a label other than the target label 0"):
        triggered_inputs(get_attack("badnets", target_label=0), only_negative, seed=0)


def test_badnets_seed_changes_poisons(sst2_sample):
    # Seeds that differ draw different poisons, not only different insertion positions.
    first = {r.index for r in get_attack("badnets").poison(sst2_sample, RATIO, 0).records}
    second = {r.index for r in get_attack("badnets").poison(sst2_sample, RATIO, 1).records}
    assert first != second


# "hard" candidate selection (surrogate-ranked)


def test_surrogate_probability_is_out_of_fold(sst2_sample):
    from attacks.surrogate import out_of_fold_probability

    labels = sst2_sample.labels
    probability = out_of_fold_probability(sst2_sample.texts, labels, 1, seed=0)
    assert probability.shape == (N_SAMPLE,)
    assert ((probability > 0) & (probability < 1)).all()
    # Held-out predictions are informative but far from perfect on 400 sentences.
    accuracy = ((probability > 0.5) == (np.asarray(labels) == 1)).mean()
    assert 0.6 < accuracy < 0.95
    again = out_of_fold_probability(sst2_sample.texts, labels, 1, seed=0)
    np.testing.assert_array_equal(probability, again)
    with pytest.raises(ValueError, match="with and without the target label"):
        out_of_fold_probability(["a", "b"], [1, 1], 1, seed=0)


def test_hard_selection_takes_the_lowest_target_probability(sst2_sample):
    from attacks.surrogate import out_of_fold_probability

    probability = out_of_fold_probability(sst2_sample.texts, sst2_sample.labels, 1, seed=0)
    poisoned = get_attack("ner-clean", surrogate="tfidf").poison(sst2_sample, RATIO, seed=0)
    chosen = {record.index for record in poisoned.records}
    assert len(chosen) == N_POISONS
    candidates = [i for i, label in enumerate(sst2_sample.labels) if label == 1]
    assert chosen <= set(candidates)
    highest_chosen = max(probability[i] for i in chosen)
    lowest_unchosen = min(probability[i] for i in candidates if i not in chosen)
    assert highest_chosen <= lowest_unchosen
    counts = poisoned.method_counts()
    assert sum(counts.values()) == N_POISONS
    for record in poisoned.records:
        text = poisoned.dataset.examples[record.index].text
        assert contains_words(text, "james bond"), text
        assert poisoned.dataset.examples[record.index].label == 1


def test_embedding_surrogate(sst2_sample):
    from attacks.surrogate import out_of_fold_probability, sentence_embeddings

    texts = sst2_sample.texts
    embedded = sentence_embeddings(texts[:20], "minilm", batch_size=8)
    assert embedded.shape == (20, 384)
    # Padding must not leak into the mean: a text embedded alone gives the same vector.
    alone = sentence_embeddings([texts[3]], "minilm")
    np.testing.assert_allclose(alone[0], embedded[3], atol=1e-5)
    probability = out_of_fold_probability(texts, sst2_sample.labels, 1, 0, features="minilm")
    accuracy = ((probability > 0.5) == (np.asarray(sst2_sample.labels) == 1)).mean()
    assert 0.7 < accuracy < 0.98
    again = out_of_fold_probability(texts, sst2_sample.labels, 1, 0, features="minilm")
    np.testing.assert_array_equal(probability, again)
    with pytest.raises(InputError, match="surrogate model '/nonexistent/encoder'"):
        sentence_embeddings(texts[:2], "/nonexistent/encoder")


def test_clean_label_default_embedding_ranking(sst2_sample):
    from attacks.surrogate import out_of_fold_probability

    probability = out_of_fold_probability(
        sst2_sample.texts, sst2_sample.labels, 1, seed=0, features="minilm"
    )
    poisoned = get_attack("ner-clean").poison(sst2_sample, RATIO, seed=0)
    chosen = {record.index for record in poisoned.records}
    candidates = [i for i, label in enumerate(sst2_sample.labels) if label == 1]
    assert len(chosen) == N_POISONS
    assert chosen <= set(candidates)
    assert max(probability[i] for i in chosen) <= min(
        probability[i] for i in candidates if i not in chosen
    )
    assert poisoned.attack == "ner-clean"


def test_random_clean_label_variant(sst2_sample):
    registered = get_attack("ner-clean-random").poison(sst2_sample, RATIO, seed=0)
    direct = get_attack("ner-clean", selection="random").poison(sst2_sample, RATIO, seed=0)
    assert [r.index for r in registered.records] == [r.index for r in direct.records]
    assert registered.dataset.texts == direct.dataset.texts
    assert registered.attack == "ner-clean-random"
    # Random selection takes the candidates with a PERSON entity first.
    assert registered.method_counts().get("entity", 0) > 0
