"""The speed report is assembled from the section files the benchmarks write (single job,
throughput, cost estimate): ordered, joined, and honest about a missing section."""

import json

import pytest

from backend.bench.speed_report import assemble


def test_report_joins_the_sections_that_exist_in_order(tmp_path):
    (tmp_path / "cost.json").write_text(json.dumps({"table_md": "# Estimator\n\n| error |\n|---|\n| 12% |",
                                                    "held_out_error": 0.12}))
    (tmp_path / "single.json").write_text(json.dumps({"table_md": "| bound |\n|---|\n| 25.0 |", "bound": 25.0}))
    assemble(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Single job") < text.index("| 25.0 |") < text.index("## Cost estimate") < text.index("12%")
    assert "### Estimator" in text                       # a section's own title sits under the report's
    assert "Throughput" in text.split("## Single job")[0]   # listed as missing, before the sections
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["sections"] == ["single", "cost"]
    assert data["cost"]["held_out_error"] == 0.12 and "throughput" not in data


def test_a_section_without_its_table_is_refused_by_name(tmp_path):
    (tmp_path / "throughput.json").write_text(json.dumps({"props_per_hour": 10}))
    with pytest.raises(ValueError, match="throughput.json.*table_md"):
        assemble(tmp_path)
