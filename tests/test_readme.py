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


def test_every_local_engine_setting_is_documented_with_its_default() -> None:
    from sweeper import store

    rows = table_rows(r"--max-retries N|--heartbeat S|--grace S")
    assert rows == {
        "--max-retries N": str(store.MAX_RETRIES),
        "--heartbeat S": f"{store.HEARTBEAT_INTERVAL:g}",
        "--grace S": f"{store.GRACE_PERIOD:g}",
    }


def yaml_snippets() -> list[str]:
    """Every ```yaml block, and every inline span written as a YAML line (`key: value`)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
    inline = re.findall(r"(?<!`)`([a-z_][a-z0-9_.]*: [^`\n]+)`(?!`)", README)
    return blocks + inline


def test_every_yaml_snippet_parses() -> None:
    import yaml

    snippets = yaml_snippets()
    assert any(s.startswith("command:") for s in snippets)
    for snippet in snippets:
        try:
            parsed = yaml.safe_load(snippet)
        except yaml.YAMLError as exc:
            raise AssertionError(f"README YAML does not parse: {snippet!r}: {exc}") from None
        assert isinstance(parsed, dict), snippet
    commands = [yaml.safe_load(s)["command"] for s in snippets if s.startswith("command:")]
    trainer = ["${env}", "${interpreter}", "-m", "trainer", "${args}"]
    assert commands and all(c == trainer for c in commands)
