"""poisonbench core: data, victim models, transforms, influence, runner and CLI."""

__version__ = "0.1.0"
