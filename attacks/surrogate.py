"""A cheap surrogate classifier that ranks clean-label candidates by how hard they are.

A clean-label poison keeps its correct label, so the model can explain that label by the
rest of the text and has little reason to learn the trigger. Examples whose words point
away from their label are the exception: there the trigger is the easiest explanation.
Clean-label text attacks such as Kallima (Chen et al., 2022, "Kallima: A Clean-label
Framework for Textual Backdoor Attacks") build on such "hard" examples. Kallima makes
examples hard by adversarial rewriting; this module only selects them.

The surrogate is a logistic regression on TF-IDF features (word 1-2 grams) or on the
frozen, mean-pooled sentence embeddings of a pretrained encoder. Each example's probability
comes from a model fitted on the other folds, so an example never scores itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmark.errors import InputError


def sentence_embeddings(texts: Sequence[str], model_spec: str, batch_size: int = 64) -> np.ndarray:
    """Return mean-pooled last hidden states of a frozen encoder, shape (n, hidden)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from benchmark.models.spec import resolve_model_path

    path = resolve_model_path(model_spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path).eval()
    except OSError as error:
        raise InputError(
            f"surrogate model {model_spec!r} could not be loaded ({error}); pass 'tfidf', "
            "'minilm' or a local model folder"
        ) from None
    rows = []
    texts = list(texts)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = encoder(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * weights).sum(1) / weights.sum(1)).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def out_of_fold_probability(
    texts: Sequence[str],
    labels: Sequence[int],
    target_label: int,
    seed: int,
    n_folds: int = 5,
    features: str = "tfidf",
) -> np.ndarray:
    """Return each example's out-of-fold probability of ``target_label``, shape (n,).

    ``features`` is "tfidf" (word 1-2 grams) or a model spec whose frozen, mean-pooled
    sentence embeddings feed the logistic regression instead.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = (np.asarray(labels) == target_label).astype(int)
    if y.min() == y.max():
        raise ValueError("the surrogate needs examples with and without the target label")
    folds = min(n_folds, int(np.bincount(y).min()))
    if folds < 2:
        raise ValueError("the surrogate needs at least two examples of each kind")
    probability = np.zeros(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    texts = list(texts)
    embedded = None if features == "tfidf" else sentence_embeddings(texts, features)
    for fit_rows, score_rows in splitter.split(np.zeros(len(y)), y):
        if embedded is None:
            vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
            fit_matrix = vectorizer.fit_transform([texts[i] for i in fit_rows])
            score_matrix = vectorizer.transform([texts[i] for i in score_rows])
            max_iter = 1000
        else:
            fit_matrix, score_matrix = embedded[fit_rows], embedded[score_rows]
            max_iter = 2000
        model = LogisticRegression(max_iter=max_iter, random_state=seed)
        model.fit(fit_matrix, y[fit_rows])
        probability[score_rows] = model.predict_proba(score_matrix)[:, 1]
    return probability
