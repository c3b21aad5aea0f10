"""Examples, data sets and their loaders."""

from benchmark.data.dataset import Example, TextDataset
from benchmark.data.loaders import load_glue_tsv, load_label_text, load_natural_instructions
from benchmark.data.sources import load_sst2

__all__ = [
    "Example",
    "TextDataset",
    "load_glue_tsv",
    "load_label_text",
    "load_natural_instructions",
    "load_sst2",
]
