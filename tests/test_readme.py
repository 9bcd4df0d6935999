"""The README's families table is the registry's (`zoo list --markdown`), never hand-kept."""
from pathlib import Path

import genzoo
from genzoo.core.catalogue import README_BEGIN, README_END, markdown_table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_families_table_matches_the_registry():
    text = (ROOT / "README.md").read_text()
    assert README_BEGIN in text and README_END in text
    table = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    builtin = [e for e in genzoo.registry().list() if e.plugin == "built-in"]
    assert table == markdown_table(builtin), "README table is stale: run `python -m genzoo.core.catalogue`"
    for e in builtin:
        assert f"`{e.name}`" in table
