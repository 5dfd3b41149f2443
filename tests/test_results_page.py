"""`metakit report` over a results folder: one self-contained page with every results file."""

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from metakit.cli import app
from metakit.results_page import MEETS, MISSES, WITHIN, build_results_page, figures, status

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_status_marks_meeting_within_ci_and_missing():
    assert status(0.990, 0.002, 98.9) == MEETS
    assert status(0.988, 0.002, 98.9) == WITHIN
    assert status(0.980, 0.002, 98.9) == MISSES


def test_figures_are_found_anywhere_with_published_numbers_and_targets():
    data = {
        "rows": [
            {"recipe": "a", "accuracy": 0.95, "ci95": 0.01, "published": 97.0},
            {"recipe": "b", "accuracy": 0.95, "ci95": 0.01, "published": "none (target 94)"},
            {"recipe": "c", "accuracy": 0.5, "ci95": 0.01},  # no reference: not a figure
            {
                "recipe": "mann",
                "accuracy": 0.9,
                "ci95": 0.01,
                "instance_accuracy": {"2": {"accuracy": 0.83, "ci95": 0.01}},
                "target": {"2": 82.0},
            },
        ]
    }
    found = {(f["label"], f["kind"]): f["status"] for f in figures(data)}
    assert found[("a", "published")] == MISSES
    assert found[("b", "published")] == MEETS
    assert found[("mann instance 2", "target")] == MEETS
    assert not any(label == "c" for label, _ in found)


def test_report_covers_every_results_file_and_opens_without_a_network(tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(RESULTS, folder)
    (folder / "zzz_new.json").write_text(
        json.dumps({"rows": [{"recipe": "zzz", "accuracy": 0.5, "ci95": 0.01, "published": 90}]})
    )
    out = build_results_page(folder, tmp_path / "page")
    page = Path(out["html"]).read_text()
    md = Path(out["markdown"]).read_text()
    for path in folder.glob("*.json"):
        assert f'id="{path.stem}"' in page and f"## {path.stem}" in md
    for png in folder.glob("*.png"):
        assert f'alt="{png.stem}"' in page  # embedded
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert '<td class="misses">misses</td>' in page
    assert "| [zzz_new](#zzz_new) | zzz | 50.00 ± 1.00 | 90 (published) | misses |" in md
    assert out["files"] == len(list(folder.glob("*.json"))) and out[MISSES] >= 1


def test_cli_report_on_a_results_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "one.json").write_text(
        json.dumps({"recipe": "r", "accuracy": 0.99, "ci95": 0.001, "published": 98.0})
    )
    (folder / "one.md").write_text("# One\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["meets"] == 1 and (folder / "report.html").exists()
    assert "<table>" in (folder / "report.html").read_text()
