"""Experiment configs are Python files (configs/*.py), not a package: this loads one by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_config_file(path) -> object:
    """get_config() of the config file at `path`."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"siamese_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def sibling_config(config_file, name: str) -> object:
    """get_config() of configs/<name> beside `config_file` (a config's __file__): for variants of one experiment."""
    return load_config_file(Path(config_file).with_name(name))
