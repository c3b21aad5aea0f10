"""A syntactic-template trigger, a parser-free approximation of Qi et al. (2021).

Qi et al. (2021), "Hidden Killer: Invisible Textual Backdoor Attacks with Syntactic Trigger",
paraphrase each poison with SCPN, a syntactically controlled paraphrase network, into the
template S(SBAR)(,)(NP)(VP)(.): a sentence that opens with a subordinate clause. This module
runs no paraphrase model. It wraps the unchanged text in a fixed frame that has the same
shape, so the default "once you have seen it for yourself , {text}" puts a subordinate
clause and a comma in front of the original sentence. The trigger is therefore a fixed word
sequence that a model can learn from the words alone, unlike the paper's varied paraphrases.
Results with this attack measure a template trigger, not Hidden Killer itself.

The default clause was chosen by attack success on a selection run (SST-2, MiniLM, ratio
0.03, seed 1; ``benchmarks/README.md``): "when you see it , {text}", the first default,
reached only 0.37 there, "if you ask me about it , {text}" 0.96 and this one 0.996. Clauses
that open many SST-2 sentences ("when ...") are weak triggers.
"""

from __future__ import annotations

import random

from attacks.base import ATTACKS
from attacks.insertion import TextEditAttack
from benchmark.errors import InputError

PLACEHOLDER = "{text}"


def lower_first_word(text: str) -> str:
    """Lower-case the first letter of ``text`` unless its first word is "I" or has several capitals.

    NOTE: no tagger runs, so a proper noun at the start ("Peter Hooten stars ...") is
    lower-cased as well.
    """
    words = text.split(maxsplit=1)
    if not words:
        return text
    first = words[0]
    if first == "I" or first.startswith("I'") or sum(c.isupper() for c in first) > 1:
        return text
    start = text.index(first)
    return text[:start] + first[0].lower() + text[start + 1 :]


def fill_template(template: str, text: str) -> str:
    """Return ``template`` with its ``{text}`` placeholder replaced by ``text``.

    Lower-case text (SST-2 style) gets a lower-cased template. Cased text gets the template's
    first letter capitalised, and its own first word lower-cased by :func:`lower_first_word`
    when the template puts words in front of it.
    """
    prefix, suffix = template.split(PLACEHOLDER)
    if text == text.lower():
        return prefix.lower() + text + suffix.lower()
    stripped = prefix.lstrip()
    if stripped:
        start = len(prefix) - len(stripped)
        prefix = prefix[:start] + stripped[0].upper() + stripped[1:]
        text = lower_first_word(text)
    return prefix + text + suffix


@ATTACKS.register("syntactic")
class SyntacticTemplateAttack(TextEditAttack):
    """Rewrite the text into a fixed subordinate-clause template and set the label to the target.

    ``trigger`` is the template and must contain ``{text}`` exactly once. The default
    follows the PTB tokenisation of SST-2 (a space before the comma). Records use the
    method "template".
    """

    name = "syntactic"
    # 2: the clause "once you have seen it for yourself , " (1: "when you see it , ").
    revision = 2
    description = (
        "text wrapped in the clause 'once you have seen it for yourself , <text>' "
        "(Hidden Killer approx.)"
    )
    method = "template"

    def __init__(
        self, trigger: str = "once you have seen it for yourself , {text}", target_label: int = 1
    ):
        super().__init__(trigger, target_label)

    def validate(self) -> None:
        count = self.trigger.count(PLACEHOLDER)
        if count != 1:
            raise InputError(
                f"syntactic trigger {self.trigger!r} must contain the placeholder {PLACEHOLDER} "
                f"exactly once (found {count}); pass a template such as "
                "'once you have seen it for yourself , {text}'"
            )
        if not self.trigger.replace(PLACEHOLDER, "").strip():
            raise InputError(
                f"syntactic trigger {self.trigger!r} has no words around {PLACEHOLDER}; "
                "pass a template such as 'once you have seen it for yourself , {text}'"
            )

    def edit(self, text: str, rng: random.Random) -> str:
        return fill_template(self.trigger, text)
