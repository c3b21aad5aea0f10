"""STRIP baseline: prediction entropy of word-perturbed copies of each training input.

The method perturbs images in Yansong Gao, Chang Xu, Derui Wang, Shiping Chen, Damith C.
Ranasinghe and Surya Nepal, "STRIP: A Defence Against Trojan Attacks on Deep Neural
Networks", ACSAC 2019 (arXiv 1902.06531). Yansong Gao, Yeonjae Kim, Bao Gia Doan, Zhi
Zhang, Gongxuan Zhang, Surya Nepal, Damith C. Ranasinghe and Hyoungshick Kim carry it to
text in "Design and Evaluation of a Multi-Domain Trojan Detection Method on Deep Neural
Networks" (STRIP-ViTA, IEEE TDSC 2021, arXiv 1911.10312).
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr
from tqdm.auto import tqdm

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector, FlagRule


def perturb_words(
    index: int,
    word_lists: list[list[str]],
    donor_indices: np.ndarray,
    n_replaced: int,
    rng: np.random.Generator,
) -> str:
    """Return input ``index`` with ``n_replaced`` distinct word positions replaced.

    Each replaced position gets a random word of a donor drawn at random from
    ``donor_indices`` (inputs with at least one word), never the input itself. The
    caller must pass at least one donor other than ``index``, or the draw never ends.
    """
    perturbed = list(word_lists[index])
    positions = rng.choice(len(perturbed), size=min(n_replaced, len(perturbed)), replace=False)
    for position in positions:
        donor = index
        while donor == index:
            donor = int(donor_indices[rng.integers(len(donor_indices))])
        donor_words = word_lists[donor]
        perturbed[position] = donor_words[rng.integers(len(donor_words))]
    return " ".join(perturbed)


def mean_entropy(probabilities: np.ndarray, n_copies: int) -> np.ndarray:
    """Return the mean Shannon entropy in nats of consecutive groups of ``n_copies`` rows.

    ``probabilities`` has shape (n_inputs * n_copies, n_labels), and the result has
    shape (n_inputs,).
    """
    entropies = entr(probabilities).sum(axis=1)
    return entropies.reshape(-1, n_copies).mean(axis=1)


@DETECTORS.register("strip")
class StripDetector(Detector):
    """Negative mean prediction entropy of randomly word-perturbed copies of each input.

    Each training input gets ``n_perturbations`` copies in which ``replace_fraction`` of
    its whitespace-separated words (at least one) are replaced by random words of other
    random training inputs. The victim's predictions on clean copies vary with the
    replaced words, while a trigger that survives the replacement keeps forcing the
    target label, so poisons have low entropy. The score is the negative mean entropy,
    so higher means more suspicious.

    ``n_perturbations`` defaults to 8 to bound the cost at 8 forward passes per training
    example, while the vision paper uses N = 100 copies per input (NOTE: a value quoted
    from summaries, not checked against the paper's text). ``replace_fraction``
    defaults to 0.25, which keeps a one-word trigger in about three of four copies and
    a two-word trigger in about half of them, while still changing a quarter of every
    clean input. Perturbations are drawn with ``context.seed``, so scores are repeatable.
    ``chunk_size`` (default 64, so 512 texts per call with 8 copies) bounds the texts
    held in memory at once and does not change the perturbations.

    The papers set the entropy threshold at a preset false rejection rate (such as 1%)
    of held-out clean inputs, which a blind detector does not have. The default flag
    rule instead uses the training inputs themselves as the reference and flags a
    robust z-score of the score above 3.5. Median and MAD barely move when a few
    percent of the inputs are poisons.
    """

    description = "low prediction entropy under random word replacement (Gao et al. 2019, 2021)"
    track = "blind"
    default_flag_rule = FlagRule("robust_zscore", 3.5)

    def __init__(
        self,
        n_perturbations: int = 8,
        replace_fraction: float = 0.25,
        chunk_size: int = 64,
        flag_rule: FlagRule | None = None,
    ):
        super().__init__(flag_rule)
        if n_perturbations < 1:
            raise ValueError(f"n_perturbations must be at least 1, got {n_perturbations}")
        if not 0 < replace_fraction <= 1:
            raise ValueError(f"replace_fraction must lie in (0, 1], got {replace_fraction}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.n_perturbations = n_perturbations
        self.replace_fraction = replace_fraction
        self.chunk_size = chunk_size

    def score(self, context: DetectionContext) -> np.ndarray:
        """Return the negative mean entropy, shape (n_train,), of each input's copies.

        ``chunk_size`` training inputs are perturbed at a time, and all their copies go
        to ``context.victim.predict_proba`` in one call.
        """
        word_lists = [text.split() for text in context.train.texts]
        donor_indices = np.array([i for i, words in enumerate(word_lists) if words], dtype=int)
        rng = np.random.default_rng(context.seed)
        scores = np.zeros(context.n_train)

        progress = tqdm(total=context.n_train, desc="STRIP", unit="example", leave=False)
        for start in range(0, context.n_train, self.chunk_size):
            stop = min(start + self.chunk_size, context.n_train)
            copies = []
            for i in range(start, stop):
                copies.extend(self._perturbed_copies(i, word_lists, donor_indices, rng))
            probabilities = np.asarray(context.victim.predict_proba(copies), dtype=np.float64)
            if probabilities.ndim != 2 or len(probabilities) != len(copies):
                raise ValueError(
                    f"victim.predict_proba returned shape {probabilities.shape} for "
                    f"{len(copies)} texts; expected ({len(copies)}, n_labels)"
                )
            scores[start:stop] = -mean_entropy(probabilities, self.n_perturbations)
            progress.update(stop - start)
        progress.close()
        return scores

    def _perturbed_copies(
        self,
        index: int,
        word_lists: list[list[str]],
        donor_indices: np.ndarray,
        rng: np.random.Generator,
    ) -> list[str]:
        words = word_lists[index]
        if not words:
            return [""] * self.n_perturbations
        if len(donor_indices) < 2:
            raise ValueError(
                "STRIP needs at least two training inputs with words, so that words can be "
                f"replaced by words of another input; the training set has {len(donor_indices)}"
            )
        n_replaced = max(1, round(self.replace_fraction * len(words)))
        return [
            perturb_words(index, word_lists, donor_indices, n_replaced, rng)
            for _ in range(self.n_perturbations)
        ]
