"""The study presets shipped with the package, one YAML file each (see the README's "Presets")."""

from importlib import resources


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted: what ``--preset`` accepts besides a YAML path."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))
