"""Every named query loads, and each has a line saying why it exists."""

from __future__ import annotations

import re
from importlib import resources

from ronin.store.queries import names, query


def test_every_query_is_named_and_explained() -> None:
    folder = resources.files("ronin.store") / "sql"
    text = "".join(entry.read_text() for entry in folder.iterdir() if entry.name.endswith(".sql"))
    blocks = re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(names()) >= 8
    for block in blocks:
        name, _, body = block.partition("\n")
        assert body.startswith("-- "), f"{name} has no comment saying why"
        assert query(name).as_string(None).strip()
