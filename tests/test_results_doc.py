"""docs/results.md shows what `ssl-bench compare` prints for the committed study files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_table_in_results_md_is_what_compare_prints(monkeypatch):
    doc = (REPO / "docs" / "results.md").read_text()
    blocks = re.findall(r"<!-- (\w+:\w+) -->\n(.*?)<!-- /\1 -->", doc, flags=re.S)
    tables = [(m, b) for m, b in blocks if "ssl-bench compare" in b]
    monkeypatch.chdir(REPO)
    for marker, body in tables:
        cmd = re.search(r"```bash\n(ssl-bench compare [^\n]+)\n```", body).group(1)
        shown = body.split("```\n\n", 1)[1]
        res = CliRunner().invoke(main, shlex.split(cmd)[1:], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert res.stdout.rstrip() == shown.rstrip(), (f"docs/results.md {marker} is stale: "
                                                       "run python benchmarks/study_report.py")
    # the figures the page shows exist
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc):
        assert (REPO / "docs" / img).is_file() or not tables, img


def test_each_generated_block_appears_once():
    """study_report.py fills the first block of a marker; a second copy of it would go stale unseen."""
    doc = (REPO / "docs" / "results.md").read_text()
    markers = re.findall(r"<!-- (\w+:\w+) -->", doc)
    assert markers and len(markers) == len(set(markers)), sorted(m for m in markers if markers.count(m) > 1)
