"""Every component input and output is described in components/README.md (from its docstring)."""

import re

import pytest

from dmlops.catalog import component_markdown
from dmlops.components import COMPONENTS, ingest, tune

CASES = [(area, component) for area, components in COMPONENTS.items() for component in components]


def table_rows(markdown: str) -> dict[tuple[str, str], list[str]]:
    """(direction, name) -> the row's cells, for each input and output row of a component's table."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith(("| in |", "| out |")):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[(cells[0], cells[1].strip("`"))] = cells
    return rows


@pytest.mark.parametrize(
    ("area", "component"), CASES, ids=[f"{area}/{component.python_func.__name__}" for area, component in CASES])
def test_every_input_and_output_is_described(area, component):
    rows = table_rows(component_markdown(area, component))
    spec = component.component_spec
    expected = [("in", name) for name in spec.inputs or {}] + [("out", name) for name in spec.outputs or {}]
    assert sorted(rows) == sorted(expected)
    assert all(len(cells) == 5 for cells in rows.values()), "a description breaks the table (unescaped |?)"
    undescribed = [f"{direction} {name}" for (direction, name), cells in rows.items() if not cells[4]]
    assert undescribed == [], (
        f"{component.python_func.__name__}: describe these in its docstring (Args:, or Returns: for returned "
        f"outputs): {undescribed}"
    )


def test_returned_outputs_take_their_description_from_returns_and_escape_pipes():
    """A NamedTuple output named like an input (tune's epochs) gets the Returns text, the input the Args text;
    a | in a description is escaped so the row keeps five cells."""
    rows = table_rows(component_markdown("tuning", tune))
    assert rows[("in", "epochs")][4].startswith("Passes over the training data")
    assert rows[("out", "epochs")][4].startswith("The best trial's epochs")
    delimiter = table_rows(component_markdown("data", ingest))[("in", "delimiter")]
    assert len(delimiter) == 5 and '"\\|"' in delimiter[4]
