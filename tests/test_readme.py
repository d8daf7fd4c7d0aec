"""The README's support tables are generated; this keeps them in sync with the registry."""
from pathlib import Path

from vtc.support import README_BEGIN, README_END, markdown_tables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_support_tables_match_the_registry() -> None:
    text = README.read_text()
    block = text[text.index(README_BEGIN) : text.index(README_END) + len(README_END)]
    assert block == markdown_tables(), "run `vtc list --markdown` and paste the output into README.md"
