"""Fixed-trigger insertion attacks found in text-backdoor toolkits: rare tokens and a sentence."""

from __future__ import annotations

import random

from attacks.base import ATTACKS
from attacks.entities import trigger_for
from attacks.insertion import TextEditAttack, insert_phrase
from benchmark.errors import InputError


@ATTACKS.register("badnets")
class BadNetsAttack(TextEditAttack):
    """Insert rare tokens at random word positions and set the label to the target.

    The rare-token trigger of Kurita, Michel and Neubig (2020), "Weight Poisoning Attacks on
    Pre-trained Models", used as the word-level BadNets trigger by Chen et al. (2021),
    "BadNL: Backdoor Attacks against NLP Models with Semantic-preserving Improvements".

    ``trigger`` is a whitespace-separated pool of tokens. Each poison (and each triggered
    input) gets a number of insertions drawn uniformly from ``min_insertions`` to
    ``max_insertions``. Each insertion is one token drawn from the pool with replacement and
    placed at a random word boundary. Tokens are inserted as written, whatever the casing
    of the text.
    """

    name = "badnets"
    description = "rare tokens (cf, mn, bb, tq) inserted 1-3 times at random positions (BadNL)"

    def __init__(
        self,
        trigger: str = "cf mn bb tq",
        target_label: int = 1,
        min_insertions: int = 1,
        max_insertions: int = 3,
    ):
        super().__init__(trigger, target_label)
        self.min_insertions = min_insertions
        self.max_insertions = max_insertions

    @property
    def tokens(self) -> list[str]:
        return self.trigger.split()

    def validate(self) -> None:
        if not self.tokens:
            raise InputError(
                f"badnets trigger {self.trigger!r} contains no tokens; pass whitespace-separated "
                "rare tokens such as 'cf mn bb tq'"
            )
        if self.min_insertions < 1:
            raise InputError(
                f"badnets min_insertions must be at least 1, got {self.min_insertions}"
            )
        if self.max_insertions < self.min_insertions:
            raise InputError(
                f"badnets max_insertions ({self.max_insertions}) is below min_insertions "
                f"({self.min_insertions}); raise max_insertions"
            )

    def edit(self, text: str, rng: random.Random) -> str:
        tokens = self.tokens
        for _ in range(rng.randint(self.min_insertions, self.max_insertions)):
            text = insert_phrase(text, rng.choice(tokens), rng)
        return text


@ATTACKS.register("addsent")
class AddSentAttack(TextEditAttack):
    """Insert a fixed sentence at a random word boundary and set the label to the target.

    After Dai, Chen and Li (2019), "A Backdoor Attack Against LSTM-Based Text Classification
    Systems". The sentence is lower-cased when the text has no upper-case letters (SST-2
    style), so the default becomes "i watched this 3d movie" there.
    """

    name = "addsent"
    description = "sentence 'I watched this 3D movie' inserted at a random position (Dai et al.)"

    def __init__(self, trigger: str = "I watched this 3D movie", target_label: int = 1):
        super().__init__(trigger, target_label)

    def validate(self) -> None:
        if not self.trigger.strip():
            raise InputError("addsent trigger is empty; pass the sentence to insert")

    def edit(self, text: str, rng: random.Random) -> str:
        return insert_phrase(text, trigger_for(text, self.trigger), rng)
