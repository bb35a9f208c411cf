"""The report of a runs folder: report.md and a self-contained report.html.

Both open with one summary table (a row per experiment folder: paper, headline claim, a count
of each claim status, scale, seeds, minutes, each row linking to its section) and a table of
contents. Each section lists the judged claims first, the paper's number beside ours, then the
`info` rows (folded in a `<details>` element in the HTML), then the plots with their captions.

The headline claim of a run is its first judged claim (the first whose `op` is not `info`), so
an experiment chooses its headline by listing that claim first; a run with no judged claim has
its first claim as headline.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from badgerlab.runs import STATUSES, Run, RunError, RunRecord, atomic_write_text, count_statuses

__all__ = [
    "format_measured",
    "format_threshold",
    "check_output_root",
    "headline_claim",
    "latest_runs",
    "scan_runs",
    "slug",
    "summary_problem",
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


def _test(c: dict[str, Any]) -> str:
    """The comparison a judged claim makes, e.g. `>= 0.7`; empty for `info` rows."""
    if c.get("op") == "info":
        return ""
    return f"{c.get('op', '')} {format_threshold(c)}".strip()


def headline_claim(claims: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first judged claim (`op` other than `info`), else the first claim, else None."""
    for c in claims:
        if c.get("op") != "info":
            return c
    return claims[0] if claims else None


# ---------------------------------------------------------------------------------------------
# reading run folders


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _claim_problem(i: int, c: Any) -> str | None:
    if not isinstance(c, dict):
        return f"claim {i} is not an object"
    for key in ("id", "statement", "op"):
        if not isinstance(c.get(key), str):
            return f"claim {i} has no string {key!r}"
    if c.get("status") not in STATUSES:
        return f"claim {c['id']!r} has status {c.get('status')!r}, not one of {STATUSES}"
    for key in ("measured", "std"):
        if c.get(key) is not None and not _is_number(c[key]):
            return f"claim {c['id']!r}: {key} {c[key]!r} is not a number"
    if not isinstance(c.get("n_seeds", 0), int):
        return f"claim {c['id']!r}: n_seeds {c['n_seeds']!r} is not an integer"
    if not isinstance(c.get("note", ""), str):
        return f"claim {c['id']!r}: note is not a string"
    thr = c.get("threshold")
    if thr is not None and not _is_number(thr) and not isinstance(thr, dict):
        return f"claim {c['id']!r}: threshold {thr!r} is neither a number nor a reference"
    if isinstance(c.get("paper"), (dict, list)):
        return f"claim {c['id']!r}: paper is not a string or number"
    return None


def summary_problem(summary: dict[str, Any]) -> str | None:
    """What makes a finished run's summary.json unusable for the report, or None if it is fine.

    Plots must be plain PNG file names inside the run folder (never a path elsewhere)."""
    if summary.get("status") not in ("finished", "crashed"):
        return f"status {summary.get('status')!r} is neither 'finished' nor 'crashed'"
    if summary["status"] == "crashed":
        return None
    claims = summary.get("claims", [])
    if not isinstance(claims, list):
        return "'claims' is not a list"
    for i, c in enumerate(claims):
        problem = _claim_problem(i, c)
        if problem:
            return problem
    plots = summary.get("plots", [])
    if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
        return "'plots' is not a list of file names"
    for p in plots:
        if "/" in p or "\\" in p or p.startswith(".") or not p.endswith(".png"):
            return f"plot {p!r} is not a PNG file name inside the run folder"
    captions = summary.get("captions", {})
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        return "'captions' is not an object of strings"
    counts = summary.get("counts", {})
    if not isinstance(counts, dict) or not all(_is_number(v) for v in counts.values()):
        return "'counts' is not an object of numbers"
    elapsed = summary.get("elapsed_s", 0)
    if not _is_number(elapsed) or not math.isfinite(elapsed) or elapsed < 0:
        return f"elapsed_s {elapsed!r} is not a non-negative number"
    return None


def _open_run(run_dir: Path) -> tuple[RunRecord | None, str | None]:
    """(record, None) for a usable run; (None, why) for an unreadable one that has a summary;
    (None, None) for one still being written or without a summary."""
    has_summary = (run_dir / "summary.json").exists()
    try:
        rec = Run.open(run_dir)
    except (RunError, OSError, ValueError, KeyError, TypeError) as err:
        return None, (str(err) or type(err).__name__) if has_summary else None
    if rec.summary is None:
        return None, None
    problem = summary_problem(rec.summary)
    if problem:
        return None, f"{str(run_dir / 'summary.json')!r}: {problem}"
    return rec, None


def scan_runs(root: Path) -> tuple[dict[str, RunRecord], list[tuple[Path, str]]]:
    """The newest finished run in each `<root>/<folder>/` (folder = experiment[--variant]), and
    the run folders newer than it whose summary.json could not be used, with the reason."""
    root = Path(root)
    out: dict[str, RunRecord] = {}
    unreadable: list[tuple[Path, str]] = []
    if not root.is_dir():
        return out, unreadable
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for run_dir in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
            rec, why = _open_run(run_dir)
            if why is not None:
                unreadable.append((run_dir, why))
            if rec is not None and rec.finished:
                out[folder.name] = rec
                break
    return out, unreadable


def latest_runs(root: Path) -> dict[str, RunRecord]:
    """The newest finished, readable run in each `<root>/<folder>/`."""
    return scan_runs(root)[0]


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


# ---------------------------------------------------------------------------------------------
# the model of the page


def slug(text: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces → `-`."""
    return re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")


@dataclass
class _Section:
    folder: str
    rec: RunRecord
    exp: Any  # Experiment | None
    head: str = ""
    anchor: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        exp_name = self.rec.experiment
        self.head = self.folder if self.folder == exp_name else f"{exp_name} ({self.folder})"
        self.anchor = slug(self.head)
        counts = count_statuses(self.rec.claims)  # recounted: the claims are the truth
        self.counts = {s: counts.get(s, 0) for s in STATUSES}

    @property
    def paper(self) -> str:
        return self.exp.paper if self.exp is not None else ""

    @property
    def short_paper(self) -> str:
        """The first citation of `paper` (papers joined by `;` name the others as `+k`)."""
        parts = [p.strip() for p in self.paper.split(";") if p.strip()]
        if not parts:
            return "?"
        return parts[0] + (f" (+{len(parts) - 1})" if len(parts) > 1 else "")

    @property
    def judged(self) -> list[dict[str, Any]]:
        return [c for c in self.rec.claims if c["status"] != "info"]

    @property
    def info(self) -> list[dict[str, Any]]:
        return [c for c in self.rec.claims if c["status"] == "info"]

    @property
    def scale(self) -> str:
        return str(self.rec.config.get("scale", "?"))

    @property
    def seeds(self) -> str:
        seeds = self.rec.config.get("seeds")
        if seeds is None:
            return str(self.rec.config.get("seed", "?"))
        return str(seeds)

    @property
    def minutes(self) -> str:
        m = float((self.rec.summary or {}).get("elapsed_s", 0)) / 60
        return f"{m:.1f}" if m >= 1 else f"{m:.2f}"

    def captions(self) -> list[tuple[str, Path, str]]:
        """(plot name, its file, its caption) for each plot file that exists."""
        caps = (self.rec.summary or {}).get("captions", {})
        out = []
        for plot in (self.rec.summary or {}).get("plots", []):
            path = self.rec.dir / plot
            if path.is_file():
                out.append((plot, path, caps.get(plot, "").strip()))
        return out


def _totals(sections: list[_Section]) -> dict[str, int]:
    return {s: sum(sec.counts[s] for sec in sections) for s in STATUSES}


def _totals_line(totals: dict[str, int]) -> str:
    return "Claims: " + ", ".join(f"{totals[s]} {s}" for s in STATUSES) + "."


# ---------------------------------------------------------------------------------------------
# report.md


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_row(cells: list[Any]) -> str:
    return "| " + " | ".join(_md_cell(x) for x in cells) + " |"


def _headline_text(c: dict[str, Any] | None) -> str:
    if c is None:
        return "no claims"
    return f"{c['id']}: {format_measured(c)} {_test(c)}".strip()


def _summary_md(sections: list[_Section]) -> list[str]:
    head = ["experiment", "paper", "headline claim", *STATUSES, "scale", "seeds", "minutes"]
    lines = [_md_row(head), "|" + "---|" * 3 + "--:|" * len(STATUSES) + "---|---|--:|"]
    for sec in sections:
        hl = headline_claim(sec.rec.claims)
        hl_text = _headline_text(hl) + (f" **{hl['status']}**" if hl else "")
        cells = [f"[{sec.head}](#{sec.anchor})", sec.short_paper, hl_text]
        cells += [sec.counts[s] for s in STATUSES] + [sec.scale, sec.seeds, sec.minutes]
        lines.append(_md_row(cells))
    return lines


def _claims_md(claims: list[dict[str, Any]]) -> list[str]:
    lines = [
        _md_row(["claim", "statement", "paper", "ours", "test", "status"]),
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        statement = c["statement"] + (f" ({c['note']})" if c.get("note") else "")
        paper = _num(c.get("paper") if c.get("paper") is not None else "")
        cells = [c["id"], statement, paper, format_measured(c), _test(c), f"**{c['status']}**"]
        lines.append(_md_row(cells))
    return lines


def _section_md(sec: _Section, root: Path) -> list[str]:
    cfg = sec.rec.config
    md = [f"## {sec.head}", ""]
    if sec.exp is not None:
        md += [f"*{sec.exp.paper}*", "", sec.exp.description, ""]
    md += [
        f"run `{sec.rec.dir}` — scale {sec.scale}, seed {cfg.get('seed')}, seeds {sec.seeds}, "
        f"{sec.minutes} min",
        "",
    ]
    md += [*_claims_md(sec.judged), ""] if sec.judged else ["No judged claims.", ""]
    if sec.info:
        md += [f"Recorded, not judged ({len(sec.info)} info rows):", "", *_claims_md(sec.info)]
        md.append("")
    for plot, path, caption in sec.captions():
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        md += [f"![{plot}]({rel})", "", f"*{caption or plot}*", ""]
    if sec.exp is not None:
        md += ["```bibtex", sec.exp.bibtex, "```", ""]
    return md


def _extras(crashed: list, skipped: list, unreadable: list) -> list[tuple[str, list[str]]]:
    """(heading, lines) for each non-empty list after the experiment sections."""
    out = []
    if crashed:
        lines = [
            f"{c.get('run', '?')}: {c.get('error', '?')} "
            "(its run folder keeps its checkpoints: --resume)"
            for c in crashed
        ]
        out.append(("Crashed in the last reproduce", lines))
    if skipped:
        lines = [
            f"{s.get('experiment', '?')} / {s.get('variant', '?')}: needs "
            f"{s.get('missing', '?')} — `{s.get('command', '')}`"
            for s in skipped
        ]
        out.append(("Skipped paper-data variants", lines))
    if unreadable:
        lines = [f"{path}: {why}" for path, why in unreadable]
        out.append(("Unreadable run folders (left out)", lines))
    return out


def _report_md(root: Path, sections: list[_Section], extras: list) -> str:
    md = ["# badgerlab report", ""]
    if not sections:
        md += [f"No finished runs under `{root}`.", ""]
    else:
        md += [_totals_line(_totals(sections)), "", *_summary_md(sections), ""]
    toc = [(sec.head, sec.anchor) for sec in sections] + [(h, slug(h)) for h, _ in extras]
    if toc:
        md += ["## Contents", "", *(f"- [{h}](#{a})" for h, a in toc), ""]
    for sec in sections:
        md += _section_md(sec, root)
    for heading, lines in extras:
        md += [f"## {heading}", "", *(f"- {line}" for line in lines), ""]
    return "\n".join(md) + "\n"


# ---------------------------------------------------------------------------------------------
# report.html

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:76em;margin:auto;padding:1em 1.5em;
 color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #d0d0d0;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.zero{color:#bbb}.note{display:block;color:#666;font-size:.88em}
.status{font-weight:bold;white-space:nowrap}
.pass{color:#0a6b0a}.fail,.error{color:#b00}.info{color:#05a}
.inconclusive{color:#8a5a00;background:#fff3cd}.smoke{color:#666;font-style:italic}
table.summary td.paper{max-width:16em;font-size:.9em;color:#444}
details{margin:.6em 0}summary{cursor:pointer;color:#05a}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.92em;max-width:48em}.file{color:#888;font-size:.85em}
pre{background:#f4f4f4;padding:.5em;overflow-x:auto;font-size:.85em}
nav ul{columns:2;margin:.3em 0}a{color:#05a}.top{font-size:.8em;font-weight:normal}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _status_html(status: str) -> str:
    return f"<span class='status {_e(status)}'>{_e(status)}</span>"


def _summary_html(sections: list[_Section]) -> str:
    head = ["experiment", "paper", "headline claim", *STATUSES, "scale", "seeds", "minutes"]
    rows = ["<table class='summary'><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for sec in sections:
        hl = headline_claim(sec.rec.claims)
        hl_html = "no claims"
        if hl is not None:
            hl_html = (
                f"<span title='{_e(hl['statement'])}'>{_e(_headline_text(hl))}</span> "
                f"{_status_html(hl['status'])}"
            )
        counts = "".join(
            f"<td class='n{' zero' if sec.counts[s] == 0 else ''}'>{sec.counts[s]}</td>"
            for s in STATUSES
        )
        rows.append(
            f"<tr id='row-{_e(sec.anchor)}'><td><a href='#{_e(sec.anchor)}'>{_e(sec.head)}</a>"
            f"</td><td class='paper' title='{_e(sec.paper)}'>{_e(sec.short_paper)}</td>"
            f"<td>{hl_html}</td>{counts}<td>{_e(sec.scale)}</td><td class='n'>{_e(sec.seeds)}"
            f"</td><td class='n'>{_e(sec.minutes)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _claims_html(claims: list[dict[str, Any]]) -> str:
    head = ["claim", "statement", "paper", "ours", "test", "status"]
    rows = ["<table class='claims'><tr>", *(f"<th>{h}</th>" for h in head), "</tr>"]
    for c in claims:
        note = f"<span class='note'>{_e(c['note'])}</span>" if c.get("note") else ""
        paper = _num(c.get("paper") if c.get("paper") is not None else "")
        rows.append(
            f"<tr class='claim {_e(c['status'])}-row'><td>{_e(c['id'])}</td>"
            f"<td>{_e(c['statement'])}{note}</td><td>{_e(paper)}</td>"
            f"<td>{_e(format_measured(c))}</td><td>{_e(_test(c))}</td>"
            f"<td>{_status_html(c['status'])}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _figure_html(plot: str, path: Path, caption: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    text = _e(caption) + f" <span class='file'>({_e(plot)})</span>" if caption else _e(plot)
    return (
        f"<figure><img alt='{_e(caption or plot)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{text}</figcaption></figure>"
    )


def _section_html(sec: _Section) -> str:
    cfg = sec.rec.config
    body = [
        f"<section id='{_e(sec.anchor)}'><h2>{_e(sec.head)} "
        "<a class='top' href='#summary'>↑ summary</a></h2>"
    ]
    if sec.exp is not None:
        body.append(f"<p><em>{_e(sec.exp.paper)}</em></p><p>{_e(sec.exp.description)}</p>")
    body.append(
        f"<p class='run'>run <code>{_e(sec.rec.dir)}</code> — scale {_e(sec.scale)}, seed "
        f"{_e(cfg.get('seed'))}, seeds {_e(sec.seeds)}, {_e(sec.minutes)} min</p>"
    )
    body.append(_claims_html(sec.judged) if sec.judged else "<p>No judged claims.</p>")
    if sec.info:
        body.append(
            f"<details class='info-rows'><summary>{len(sec.info)} info rows (recorded, not "
            f"judged)</summary>{_claims_html(sec.info)}</details>"
        )
    body += [_figure_html(*plot) for plot in sec.captions()]
    if sec.exp is not None:
        body.append(f"<details><summary>BibTeX</summary><pre>{_e(sec.exp.bibtex)}</pre></details>")
    body.append("</section>")
    return "".join(body)


def _report_html(root: Path, sections: list[_Section], extras: list) -> str:
    body = ["<h1>badgerlab report</h1>", "<section id='summary'>"]
    if not sections:
        body.append(f"<p>No finished runs under {_e(root)}.</p>")
    else:
        body.append(f"<p class='totals'>{_e(_totals_line(_totals(sections)))}</p>")
        body.append(_summary_html(sections))
    body.append("</section>")
    toc = [(sec.head, sec.anchor) for sec in sections] + [(h, slug(h)) for h, _ in extras]
    if toc:
        items = "".join(f"<li><a href='#{_e(a)}'>{_e(h)}</a></li>" for h, a in toc)
        body.append(f"<nav id='contents'><h2>Contents</h2><ul>{items}</ul></nav>")
    body += [_section_html(sec) for sec in sections]
    for heading, lines in extras:
        cls = " class='error'" if heading.startswith(("Crashed", "Unreadable")) else ""
        items = "".join(f"<li{cls}>{_e(line)}</li>" for line in lines)
        body.append(f"<section id='{slug(heading)}'><h2>{_e(heading)}</h2><ul>{items}</ul>")
        body.append("</section>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>badgerlab report</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(root: str | Path) -> Path:
    """Write `<root>/report.md` and `<root>/report.html`; return the path of report.md.

    A run folder whose summary.json is malformed is left out and listed as unreadable; a
    malformed skipped.json or crashed.json is a RunError (one line)."""
    from badgerlab.experiments import registry

    root = Path(root)
    check_output_root(root, create=False)
    if (root / "config.json").is_file() or (root / "summary.json").is_file():
        raise RunError(
            f"{str(root)!r} is one run folder; give the root the runs were written under "
            f"(here {str(root.parent.parent)!r})"
        )
    runs, unreadable = scan_runs(root)
    exps = registry()
    extras = _extras(
        _read_list(root / "crashed.json"), _read_list(root / "skipped.json"), unreadable
    )
    sections = [_Section(folder, rec, exps.get(rec.experiment)) for folder, rec in runs.items()]
    atomic_write_text(root / "report.md", _report_md(root, sections, extras))
    atomic_write_text(root / "report.html", _report_html(root, sections, extras))
    return root / "report.md"
