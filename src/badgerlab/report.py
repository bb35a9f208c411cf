"""The report of a runs folder: report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from badgerlab.runs import Run, RunError, RunRecord, atomic_write_text

__all__ = [
    "format_measured",
    "format_threshold",
    "check_output_root",
    "latest_runs",
    "write_report",
]


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def format_measured(c: dict[str, Any]) -> str:
    """`mean ± std (n=k)`, or `missing` when the claim has no measurement."""
    if c.get("measured") is None:
        return "missing"
    s = _num(c["measured"])
    if c.get("n_seeds", 0) > 1 and c.get("std") is not None:
        s += f" ± {_num(c['std'])}"
    return s + f" (n={c.get('n_seeds', 0)})"


def format_threshold(c: dict[str, Any]) -> str:
    thr = c.get("threshold")
    if thr is None:
        return ""
    if isinstance(thr, dict):
        return f"claim {thr.get('ref')}"
    return _num(thr)


def latest_runs(root: Path) -> dict[str, RunRecord]:
    """The newest finished run in each `<root>/<folder>/` (folder = experiment[--variant])."""
    root = Path(root)
    out: dict[str, RunRecord] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for run_dir in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
            try:
                rec = Run.open(run_dir)
            except RunError:
                continue
            if rec.finished:
                out[folder.name] = rec
                break
    return out


def check_output_root(root: Path, *, create: bool) -> None:
    """Refuse a runs root that is a file, lies below a file, is missing (unless `create`) or
    cannot be written, with one line naming it."""
    for p in (root, *root.parents):
        if p.exists() and not p.is_dir():
            raise RunError(f"{str(root)!r}: {str(p)!r} is a file, not a folder")
    if not root.exists():
        if not create:
            raise RunError(f"runs folder {str(root)!r} does not exist")
        try:
            root.mkdir(parents=True)
        except OSError as err:
            raise RunError(f"cannot create {str(root)!r}: {err.strerror or err}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunError(f"runs folder {str(root)!r} is not writable")


def _claims_md(claims: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| claim | statement | paper | measured | op | threshold | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        cells = [
            c["id"],
            c["statement"] + (f" ({c['note']})" if c.get("note") else ""),
            _num(c.get("paper") if c.get("paper") is not None else ""),
            format_measured(c),
            c["op"],
            format_threshold(c),
            f"**{c['status']}**",
        ]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return lines


def write_report(root: str | Path) -> Path:
    """Write `<root>/report.md` and `<root>/report.html`; return the path of report.md."""
    from badgerlab.experiments import registry

    root = Path(root)
    check_output_root(root, create=False)
    runs = latest_runs(root)
    exps = registry()
    skipped = _read_list(root / "skipped.json")
    crashed = _read_list(root / "crashed.json")
    md = ["# badgerlab report", ""]
    body = ["<h1>badgerlab report</h1>"]
    if not runs:
        md.append(f"No finished runs under `{root}`.")
        body.append(f"<p>No finished runs under {html.escape(str(root))}.</p>")
    totals: dict[str, int] = {}
    for rec in runs.values():
        for c in rec.claims:
            totals[c["status"]] = totals.get(c["status"], 0) + 1
    if totals:
        line = ", ".join(f"{v} {k}" for k, v in sorted(totals.items()))
        md += [f"Claims: {line}.", ""]
        body.append(f"<p>Claims: {html.escape(line)}.</p>")
    for folder, rec in runs.items():
        exp = exps.get(rec.experiment)
        cfg = rec.config
        head = folder if folder == rec.experiment else f"{rec.experiment} ({folder})"
        md += [f"## {head}", ""]
        body.append(f"<h2>{html.escape(head)}</h2>")
        if exp is not None:
            md += [f"*{exp.paper}*", "", exp.description, ""]
            body.append(f"<p><em>{html.escape(exp.paper)}</em></p>")
            body.append(f"<p>{html.escape(exp.description)}</p>")
        info = (
            f"run `{rec.dir}` — scale {cfg.get('scale')}, seed {cfg.get('seed')}, "
            f"seeds {cfg.get('seeds')}, {rec.summary.get('elapsed_s', 0):.0f} s"
        )
        md += [info, ""]
        body.append(f"<p>{html.escape(info)}</p>")
        md += [*_claims_md(rec.claims), ""]
        body.append(_claims_html(rec.claims))
        for plot in rec.summary.get("plots", []):
            path = rec.dir / plot
            if not path.exists():
                continue
            rel = path.relative_to(root) if path.is_relative_to(root) else path
            md += [f"![{plot}]({rel})", ""]
            b64 = base64.b64encode(path.read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(plot)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{html.escape(plot)}</figcaption></figure>"
            )
        if exp is not None:
            md += ["```bibtex", exp.bibtex, "```", ""]
            body.append(f"<pre>{html.escape(exp.bibtex)}</pre>")
    if crashed:
        md += ["## Crashed in the last reproduce", ""]
        body.append("<h2>Crashed in the last reproduce</h2><ul>")
        for c in crashed:
            line = f"{c['run']}: {c['error']} (its run folder keeps its checkpoints: --resume)"
            md.append(f"- {line}")
            body.append(f"<li class='error'>{html.escape(line)}</li>")
        md.append("")
        body.append("</ul>")
    if skipped:
        md += ["## Skipped paper-data variants", ""]
        body.append("<h2>Skipped paper-data variants</h2><ul>")
        for s in skipped:
            line = f"{s['experiment']} / {s['variant']}: needs {s['missing']} — `{s['command']}`"
            md.append(f"- {line}")
            body.append(f"<li>{html.escape(line)}</li>")
        md.append("")
        body.append("</ul>")
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .5em}"
        ".pass{color:#070}.fail,.error{color:#b00}.info{color:#05a}img{max-width:48em}"
        "pre{background:#f4f4f4;padding:.5em;overflow-x:auto}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>badgerlab report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
    atomic_write_text(root / "report.md", "\n".join(md) + "\n")
    atomic_write_text(root / "report.html", page)
    return root / "report.md"


def _read_list(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        items = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise RunError(f"{str(path)!r} is unreadable: {err}") from None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and all(isinstance(v, str) for v in i.values()) for i in items
    ):
        raise RunError(f"{str(path)!r} is not a list of objects of strings")
    return items


def _claims_html(claims: list[dict[str, Any]]) -> str:
    rows = [
        "<table><tr><th>claim</th><th>statement</th><th>paper</th><th>measured</th>"
        "<th>op</th><th>threshold</th><th>status</th></tr>"
    ]
    for c in claims:
        cells = [
            c["id"],
            c["statement"] + (f" ({c['note']})" if c.get("note") else ""),
            _num(c.get("paper") if c.get("paper") is not None else ""),
            format_measured(c),
            c["op"],
            format_threshold(c),
        ]
        tds = "".join(f"<td>{html.escape(str(x))}</td>" for x in cells)
        rows.append(f"<tr>{tds}<td class='{c['status']}'><b>{c['status']}</b></td></tr>")
    rows.append("</table>")
    return "".join(rows)
