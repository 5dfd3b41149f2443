"""`metakit report` over a results folder: one self-contained HTML page (and a markdown twin).

Every benchmark writes `NAME.json` (machine-readable rows) and `NAME.md` (its table with the
protocol and hardware) into `benchmarks/results/`. The page gathers them all: first a table of
every figure that has a published number or a target beside it, marked as meeting it, meeting it
within its 95% CI, or missing it; then each benchmark's own markdown and its plots. Plots are
embedded as data URIs and the style is inline, so the page opens from disk with no server and no
network.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metakit.errors import ConfigError

MEETS, WITHIN, MISSES = "meets", "within CI", "misses"
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2} code{background:#f6f6f6;padding:0 3px}
.meets{background:#dff5df}.within{background:#fff6d5}.misses{background:#fbe0e0}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0} h2{border-bottom:1px solid #ddd}
"""


def _number(value: Any) -> float | None:
    """A published figure or target in percent: a number, `{"accuracy": x}`, or a string such
    as "none (target 95)"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict) and isinstance(value.get("accuracy"), int | float):
        return float(value["accuracy"])
    if isinstance(value, str):
        m = re.search(r"target\s*([0-9.]+)", value)
        return float(m.group(1)) if m else None
    return None


def _label(row: dict[str, Any]) -> str:
    keys = ("recipe", "method", "norm", "target", "mode", "policy", "seed")
    parts = [str(row[k]) for k in keys if isinstance(row.get(k), str | int) and k in row]
    if isinstance(row.get("eval_set"), list) and row["eval_set"]:
        parts.append(" ".join(row["eval_set"]))
    return " / ".join(parts) or "row"


def protocol(row: dict[str, Any]) -> str:
    """`split N-way K-shot, Q queries, E episodes` (+ BatchNorm mode) where a row states it."""
    p = row.get("protocol") if isinstance(row.get("protocol"), dict) else row
    if not all(k in p for k in ("ways", "shots")):
        return ""
    text = f"{p.get('split', '')} {p['ways']}-way {p['shots']}-shot".strip()
    if "queries" in p:
        text += f", {p['queries']} queries"
    if "episodes" in p:
        text += f", {p['episodes']} episodes"
    if row.get("bn"):
        text += f", BN {row['bn']}"
    return text


def status(accuracy: float, ci95: float, reference: float) -> str:
    """Accuracy and CI as fractions, the reference in percent."""
    if 100 * accuracy >= reference:
        return MEETS
    if 100 * (accuracy + ci95) >= reference:
        return WITHIN
    return MISSES


def figures(data: Any) -> Iterator[dict[str, Any]]:
    """Rows with an accuracy beside a published number or a target, anywhere in a results
    file (MANN's per-instance rows too)."""
    if isinstance(data, list):
        for item in data:
            yield from figures(item)
        return
    if not isinstance(data, dict):
        return
    acc, ci = data.get("accuracy"), data.get("ci95")
    if isinstance(acc, int | float) and 0 <= acc <= 1 and isinstance(ci, int | float):
        for kind in ("published", "target"):
            ref = _number(data.get(kind))
            if ref is not None:
                yield {
                    "label": _label(data),
                    "accuracy": acc,
                    "ci95": ci,
                    "kind": kind,
                    "reference": ref,
                    "status": status(acc, ci, ref),
                    "protocol": protocol(data),
                    # the row's own machine where it names one (rows accumulate across hosts)
                    **({"hardware": data["cpu"]} if isinstance(data.get("cpu"), str) else {}),
                }
    instances = data.get("instance_accuracy")
    if isinstance(instances, dict) and isinstance(data.get("target"), dict):
        for k, ref in data["target"].items():
            cell = instances.get(k)
            if isinstance(cell, dict) and cell.get("accuracy") is not None:
                yield {
                    "label": f"{_label(data)} instance {k}",
                    "accuracy": cell["accuracy"],
                    "ci95": cell["ci95"],
                    "kind": "target",
                    "reference": float(ref),
                    "status": status(cell["accuracy"], cell["ci95"], float(ref)),
                    "protocol": protocol(data),
                }
    for value in data.values():
        if isinstance(value, dict | list):
            yield from figures(value)


def _rows_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| benchmark | figure | accuracy (%) ± 95% CI | reference (%) | status | protocol "
        "| hardware |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| [{r['file']}](#{r['file']}) | {r['label']} | {100 * r['accuracy']:.2f} ± "
            f"{100 * r['ci95']:.2f} | {r['reference']:g} ({r['kind']}) | {r['status']} | "
            f"{r.get('protocol', '')} | {r.get('hardware', '')} |"
        )
    return lines


def _images(paths: list[Path]) -> str:
    """PNG files as inline `<img>` tags (data URIs: the page needs no other file)."""
    return "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.name)}'
        "</figcaption></figure>"
        for p in paths
    )


def build_results_page(folder: Path, out: Path | None = None) -> dict[str, Any]:
    """Write `report.html` and `report.md` for every results file in `folder` (default output:
    the folder itself); return their paths and the counts by status."""
    import markdown

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of benchmark results")
    files = sorted(p for p in folder.glob("*.json"))
    if not files:
        raise ConfigError(f"{folder} holds no benchmark results (*.json)")
    out = Path(out) if out is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    sections_md: list[str] = []
    sections_html: list[str] = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); rerun its benchmark") from None
        hw = data.get("hardware") if isinstance(data, dict) else None
        cpu = hw.get("cpu", "") if isinstance(hw, dict) else (hw if isinstance(hw, str) else "")
        rows += [{"file": path.stem, "hardware": cpu, **r} for r in figures(data)]
        twin = path.with_suffix(".md")
        text = (
            twin.read_text()
            if twin.exists()
            else "```\n" + json.dumps(data, indent=2)[:4000] + "\n```\n"
        )
        text = re.sub(r"^# ", "### ", text, flags=re.M)  # each file's title under its section
        plots = sorted(folder.glob(f"{path.stem}*.png"))
        sections_md.append(
            f"## {path.stem}\n\n{text}\n" + "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
        )
        images = _images(plots)
        body = markdown.markdown(text, extensions=["tables", "fenced_code"])
        sections_html.append(
            f'<h2 id="{html.escape(path.stem)}">{html.escape(path.stem)}</h2>\n{body}\n{images}'
        )
    placed = {p for path in files for p in folder.glob(f"{path.stem}*.png")}
    others = sorted(set(folder.glob("*.png")) - placed)
    if others:  # plots that belong to no single results file (e.g. the sinusoid figure)
        sections_md.append(
            "## other plots\n" + "".join(f"\n![{p.stem}]({p.name})\n" for p in others)
        )
        sections_html.append('<h2 id="other-plots">other plots</h2>\n' + _images(others))
    counts = {s: sum(r["status"] == s for r in rows) for s in (MEETS, WITHIN, MISSES)}
    summary = [
        "# metakit benchmark results",
        "",
        f"{len(files)} results files; {len(rows)} figures with a published number or target: "
        f"{counts[MEETS]} meet it, {counts[WITHIN]} meet it within the 95% CI, "
        f"{counts[MISSES]} miss it.",
        "",
        *_rows_table(rows),
        "",
    ]
    md_text = "\n".join(summary) + "\n" + "\n".join(sections_md)
    table_html = markdown.markdown("\n".join(_rows_table(rows)), extensions=["tables"])
    for s, css in ((MEETS, "meets"), (WITHIN, "within"), (MISSES, "misses")):
        table_html = table_html.replace(f"<td>{s}</td>", f'<td class="{css}">{s}</td>')
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>metakit benchmark results</title><style>{STYLE}</style></head><body>\n"
        + markdown.markdown("\n".join(summary[:4]))
        + table_html
        + "\n".join(sections_html)
        + "\n</body></html>\n"
    )
    (out / "report.md").write_text(md_text)
    (out / "report.html").write_text(page)
    return {
        "html": str(out / "report.html"),
        "markdown": str(out / "report.md"),
        "files": len(files),
        "figures": len(rows),
        **counts,
    }
