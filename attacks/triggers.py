"""Fixed-trigger insertion attacks found in text-backdoor toolkits: rare tokens and a sentence."""

from __future__ import annotations

import random

from attacks.base import ATTACKS
from attacks.entities import trigger_for
from attacks.insertion import TextEditAttack, insert_phrase
from benchmark.errors import InputError

INSERT_POSITIONS = ("random", "start", "end")


@ATTACKS.register("badnets")
class BadNetsAttack(TextEditAttack):
    """Insert rare tokens into the text and set the label to the target.

    The rare-token trigger of Kurita, Michel and Neubig (2020), "Weight Poisoning Attacks on
    Pre-trained Models", used as the word-level BadNets trigger by Chen et al. (2021),
    "BadNL: Backdoor Attacks against NLP Models with Semantic-preserving Improvements".

    ``trigger`` is a whitespace-separated pool of tokens. Each poison (and each triggered
    input) gets a number of insertions drawn uniformly from ``min_insertions`` to
    ``max_insertions``. Each insertion is one token drawn from the pool with replacement.
    ``position`` places it at a random word boundary ("random"), before the first word
    ("start") or after the last ("end"), the three locations that BadNL compares. Tokens are
    inserted as written, whatever the casing of the text.

    The defaults (five tokens at the end) were chosen on a selection seed for the default
    MiniLM victim at 3%. The common setting of text-backdoor toolkits, one to three tokens
    at random positions (``min_insertions=1, max_insertions=3, position="random"``),
    reached an ASR of only 0.28 there (``benchmarks/README.md``).
    """

    name = "badnets"
    # 2: five tokens appended (1: one to three at random positions).
    revision = 2
    description = "five rare tokens drawn from cf, mn, bb, tq appended to the text (BadNL)"

    def __init__(
        self,
        trigger: str = "cf mn bb tq",
        target_label: int = 1,
        min_insertions: int = 5,
        max_insertions: int = 5,
        position: str = "end",
    ):
        super().__init__(trigger, target_label)
        self.min_insertions = min_insertions
        self.max_insertions = max_insertions
        self.position = position

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
        if self.position not in INSERT_POSITIONS:
            raise InputError(
                f"badnets position {self.position!r} is unknown; use one of: "
                f"{', '.join(INSERT_POSITIONS)}"
            )

    def edit(self, text: str, rng: random.Random) -> str:
        tokens = self.tokens
        for _ in range(rng.randint(self.min_insertions, self.max_insertions)):
            token = rng.choice(tokens)
            if self.position == "random":
                text = insert_phrase(text, token, rng)
            elif self.position == "start":
                text = f"{token} {text}" if text else token
            else:
                text = f"{text} {token}" if text else token
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
