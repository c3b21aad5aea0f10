"""Query transforms for the influence-based poison detector.

Importing this package registers the six built-in transforms in :data:`TRANSFORMS`:
prefix_negation and antonym_substitution (lexicon), paraphrase and question_negation
(semantic), grammatical_negation and clause_reordering (structural).
"""

from benchmark.transforms import lexicon, negation, paraphrase, reorder
from benchmark.transforms.base import (
    CATEGORIES,
    TRANSFORMS,
    Transform,
    TransformOutput,
    get_transform,
    select_transforms,
    transform_texts,
)

__all__ = [
    "CATEGORIES",
    "TRANSFORMS",
    "Transform",
    "TransformOutput",
    "get_transform",
    "lexicon",
    "negation",
    "paraphrase",
    "reorder",
    "select_transforms",
    "transform_texts",
]
