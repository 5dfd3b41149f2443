"""`metakit report RUN` for a search run: the reward curve, the top designs and the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metakit.search.arch import read_history


def label(row: dict[str, Any]) -> str:
    """How a history row names its design: an architecture or a formula."""
    return row.get("arch") or row["design"]


def best_designs(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The `n` best valid history rows, each design once (at its first best reward)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "invalid" in r:
            continue
        key = label(r)
        if key not in best or r["reward"] > best[key]["reward"]:
            best[key] = r
    return sorted(best.values(), key=lambda r: -r["reward"])[:n]


def is_search_run(run_dir: Path) -> bool:
    return (Path(run_dir) / "history.jsonl").exists()


def search_report(run_dir: Path, out: Path | None = None, top: int = 10) -> dict[str, Any]:
    """Write `reward.png` (reward of every evaluated design and its running mean) and
    `report.md` (top designs, derived architecture, retrained result) into `out` (default: the
    run directory); return their paths and the top designs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = read_history(run_dir)
    searched = [r for r in rows if r["split"] == "search"]
    rewards = [r["reward"] for r in searched]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rewards, ".", ms=2, alpha=0.4, label="evaluated design")
    window = max(1, len(rewards) // 50)
    if rewards:
        smooth = [
            sum(rewards[max(0, i - window + 1) : i + 1])
            / len(rewards[max(0, i - window + 1) : i + 1])
            for i in range(len(rewards))
        ]
        ax.plot(smooth, lw=2, label=f"running mean ({window})")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("reward (validation accuracy)")
    ax.set_title(f"search {run_dir.name}")
    ax.legend()
    fig.tight_layout()
    png = out / "reward.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    ranked = best_designs(rows, top)  # search and derive phases
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    lines = [f"# Search {run_dir.name}", "", f"![reward curve]({png.name})", ""]
    if result and "arch" in result:
        lines += [
            f"Derived architecture: `{result['arch']}` (validation accuracy with shared weights "
            f"{result['derived_val_accuracy']:.4f}, {result['evaluations']} evaluations, "
            f"{result['search_seconds'] / 60:.1f} min of search).",
            "",
        ]
        if "test_accuracy" in result:
            lines += [
                f"Retrained from scratch: test accuracy {100 * result['test_accuracy']:.2f} ± "
                f"{100 * result['test_ci95']:.2f} % ({result['params']} parameters, "
                f"{result['retrain_seconds'] / 60:.1f} min).",
                "",
            ]
    lines += ["| rank | design | reward | phase | epoch |", "|---:|---|---:|---|---:|"]
    for i, r in enumerate(ranked, 1):
        lines.append(f"| {i} | `{label(r)}` | {r['reward']:.4f} | {r['split']} | {r['step']} |")
    near = [t for t in (result or {}).get("top", []) if t.get("swish_distance") is not None]
    if near:
        from metakit.search.activation import SWISH_LIKE

        t = min(near, key=lambda t: t["swish_distance"])
        verdict = "a close relative" if t["swish_distance"] < SWISH_LIKE else "not a close relative"
        lines += [
            "",
            f"Closest to Swish x·σ(bx) among the top {len(result['top'])}: `{t['design']}`, "
            f"{t['swish_distance']:.3f} away ({verdict}; below {SWISH_LIKE} counts).",
        ]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return {
        "reward_png": str(png),
        "report_md": str(md),
        "evaluations": len(searched),
        "top": [{"design": label(r), "reward": r["reward"]} for r in ranked],
        **({"result": result} if result else {}),
    }
