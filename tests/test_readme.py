"""README.md stays true: its tables of config keys and analysis thresholds match the code."""

from __future__ import annotations

import re

from conftest import REPO

from analysis.diagnose import THRESHOLD_FIELDS
from contract.config import DEFAULTS

README = (REPO / "README.md").read_text()


def table_rows(first_cell: str) -> dict[str, str]:
    """``| `key` | `default` | ...`` rows -> {key: default}."""
    pattern = re.compile(rf"^\| `?({first_cell})`? \| `?([^`|]+?)`? \|", re.MULTILINE)
    return {m.group(1): m.group(2) for m in pattern.finditer(README)}


def test_every_config_key_is_documented_with_its_default() -> None:
    rows = table_rows("|".join(DEFAULTS))
    assert rows == {key: repr(value) for key, value in DEFAULTS.items()}


def test_every_threshold_is_documented_with_its_default() -> None:
    rows = table_rows("|".join(THRESHOLD_FIELDS))
    expected = {
        name: "none" if f.default is None else str(f.default)
        for name, f in THRESHOLD_FIELDS.items()
    }
    assert rows == expected
