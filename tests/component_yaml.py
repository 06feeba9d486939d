"""Components as another team uses them: loaded from the checked-in YAML, not imported from dmlops."""

from pathlib import Path

from kfp import components

COMPONENTS_DIR = Path(__file__).resolve().parents[1] / "components"


def load_yaml_component(area: str, name: str):
    """The component compiled to ``components/<area>/<name>.yaml``."""
    return components.load_component_from_file(str(COMPONENTS_DIR / area / f"{name}.yaml"))
