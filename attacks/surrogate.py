"""A cheap surrogate classifier that ranks clean-label candidates by how hard they are.

A clean-label poison keeps its correct label, so the model can explain that label by the
rest of the text and has little reason to learn the trigger. Examples whose words point
away from their label are the exception: there the trigger is the easiest explanation.
Clean-label text attacks such as Kallima (Chen et al., 2022, "Kallima: A Clean-label
Framework for Textual Backdoor Attacks") build on such "hard" examples. Kallima makes
examples hard by adversarial rewriting; this module only selects them.

The surrogate is a TF-IDF (word 1-2 grams) logistic regression. Each example's probability
comes from a model fitted on the other folds, so an example never scores itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def out_of_fold_probability(
    texts: Sequence[str], labels: Sequence[int], target_label: int, seed: int, n_folds: int = 5
) -> np.ndarray:
    """Return each example's out-of-fold probability of ``target_label``, shape (n,)."""
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
    for fit_rows, score_rows in splitter.split(np.zeros(len(y)), y):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        features = vectorizer.fit_transform([texts[i] for i in fit_rows])
        model = LogisticRegression(max_iter=1000, random_state=seed)
        model.fit(features, y[fit_rows])
        scored = vectorizer.transform([texts[i] for i in score_rows])
        probability[score_rows] = model.predict_proba(scored)[:, 1]
    return probability
