"""report.html / report.md: the summary table, contents, folded info rows, captions, bad run
folders; and a real headless Chromium rendering the report of a smoke reproduce."""

from __future__ import annotations

import json
import os
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from badgerlab.report import write_report
from badgerlab.runs import RunError

VOID = {"img", "meta", "br", "hr", "link", "input"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag, cls=None):
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag and (cls is None or cls in c.attrs.get("class", "").split()):
                    yield c
                yield from c.all(tag, cls)

    def kids(self, tag):
        return [c for c in self.children if isinstance(c, Node) and c.tag == tag]


class Tree(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.root = self.cur = Node("root", {})
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>"
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def _png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)


def _claim(id, status, op=">=", measured=0.5, **kw):
    return {"id": id, "statement": f"statement of {id}", "paper": kw.pop("paper", "0.9"),
            "measured": measured, "std": 0.1, "n_seeds": 2, "op": op, "threshold": 0.7,
            "status": status, "note": kw.pop("note", ""), "requires": [], **kw}  # fmt: skip


def _run(root: Path, folder: str, stamp: str, experiment: str, claims, plots=None, **extra):
    d = root / folder / f"{stamp}-s0"
    d.mkdir(parents=True)
    cfg = {"scale": "quick", "seed": 0, "seeds": 2}
    (d / "config.json").write_text(json.dumps({"experiment": experiment, "config": cfg}))
    plots = plots or {}
    for name in plots:
        _png(d / name)
    summary = {"experiment": experiment, "status": "finished", "claims": claims,
               "plots": list(plots), "captions": {k: v for k, v in plots.items() if v},
               "elapsed_s": 90.0, **extra}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    return d


CLAIMS_A = [
    _claim("a-info-first", "info", op="info"),
    _claim("a-pass", "pass"),
    _claim("a-fail", "fail"),
    _claim("a-inconclusive", "inconclusive", note="baseline 0.1 <= 0.2"),
    _claim("a-info", "info", op="info"),
    _claim("a-error", "error", measured=None),
    _claim("a-smoke", "smoke"),
]
CLAIMS_B = [_claim("b-only-info", "info", op="info")]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "runs"
    _run(root, "online-learners", "20260101T000000Z", "online-learners", CLAIMS_A,
         {"curve.png": "what the curve shows; look for the rise", "bare.png": ""})  # fmt: skip
    _run(root, "made-up--variant", "20260101T000000Z", "made-up", CLAIMS_B)
    return root


def _sections(tree):
    return {s.attrs["id"]: s for s in tree.root.all("section") if "id" in s.attrs}


def test_summary_table_toc_and_sections(folder):
    md = write_report(folder).read_text()
    tree = Tree((folder / "report.html").read_text())
    assert "<script" not in (folder / "report.html").read_text()
    totals = "Claims: 1 pass, 1 fail, 1 inconclusive, 3 info, 1 error, 1 smoke."
    assert totals in md
    assert [p.text() for p in tree.root.all("p", "totals")] == [totals]
    (table,) = tree.root.all("table", "summary")
    head, *rows = table.kids("tr")
    header = [th.text() for th in head.kids("th")]
    assert header[:3] == ["experiment", "paper", "headline claim"]
    assert header[-3:] == ["scale", "seeds", "minutes"]
    sections = _sections(tree)
    by_name = {}
    for row in rows:
        cells = row.kids("td")
        (link,) = cells[0].all("a")
        assert link.attrs["href"][1:] in sections  # each row links to its section
        by_name[link.text()] = {h: c.text() for h, c in zip(header, cells, strict=True)}
    a, b = by_name["online-learners"], by_name["made-up (made-up--variant)"]
    assert [a[s] for s in ("pass", "fail", "inconclusive", "info", "error", "smoke")] == [
        "1", "1", "1", "2", "1", "1"]  # fmt: skip
    assert a["headline claim"].startswith("a-pass")  # first judged claim, not the info row
    assert b["headline claim"].startswith("b-only-info")  # no judged claim: the first one
    assert (a["scale"], a["seeds"], a["minutes"]) == ("quick", "2", "1.5")
    assert "Kirsch" in a["paper"] and b["paper"] == "?"
    # contents: every section, in order
    (nav,) = tree.root.all("nav")
    hrefs = [x.attrs["href"][1:] for x in nav.all("a")]
    assert set(hrefs) == set(sections) - {"summary"} and len(hrefs) == 2
    # each section: judged claims first (not info), info rows folded in <details>
    sec = sections["online-learners"]
    (judged,) = [t for t in sec.kids("table")]
    ids = [tr.kids("td")[0].text() for tr in judged.kids("tr")[1:]]
    assert ids == ["a-pass", "a-fail", "a-inconclusive", "a-error", "a-smoke"]
    th = [x.text() for x in judged.kids("tr")[0].kids("th")]
    assert th.index("ours") == th.index("paper") + 1  # the paper's number beside ours
    (details,) = sec.all("details", "info-rows")
    info_ids = [tr.kids("td")[0].text() for t in details.all("table") for tr in t.kids("tr")[1:]]
    assert info_ids == ["a-info-first", "a-info"]
    for status in ("pass", "fail", "inconclusive", "error", "smoke"):
        assert [x.text() for x in judged.all("span", status)] == [status]
    assert "baseline 0.1 <= 0.2" in judged.text()
    caps = [f.text() for f in sec.all("figcaption")]
    assert caps[0].startswith("what the curve shows; look for the rise") and caps[1] == "bare.png"
    # report.md: the same summary table and contents
    assert "| [online-learners](#online-learners) |" in md
    assert "- [made-up (made-up--variant)](#made-up-made-up--variant)" in md
    assert "*what the curve shows; look for the rise*" in md


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"status": "finished", "claims": {"a": 1}}).encode(),
        json.dumps({"status": "finished", "claims": [_claim("x", "bogus")]}).encode(),
        json.dumps(
            {"status": "finished", "claims": [_claim("x", "pass", measured="hi")]}
        ).encode(),
        json.dumps({"status": "finished", "claims": [], "plots": ["../../secret.png"]}).encode(),
        json.dumps({"status": "finished", "claims": [], "elapsed_s": "long"}).encode(),
        json.dumps({"status": 3}).encode(),
    ],
)
def test_a_malformed_summary_is_listed_not_fatal(folder, bad):
    older = folder / "online-learners" / "20260101T000000Z-s0"
    newer = _run(folder, "online-learners", "20260202T000000Z", "online-learners", CLAIMS_A)
    (newer / "summary.json").write_bytes(bad)
    md = write_report(folder).read_text()
    assert "Unreadable run folders (left out)" in md and str(newer) in md
    assert str(older) in md and "a-pass" in md  # the older finished run is reported instead
    tree = Tree((folder / "report.html").read_text())
    assert "unreadable-run-folders-left-out" in _sections(tree)


def test_bad_lists_and_roots_stay_one_line_errors(folder, tmp_path):
    (folder / "crashed.json").write_text('{"run": 1}')
    with pytest.raises(RunError, match="crashed.json"):
        write_report(folder)
    with pytest.raises(RunError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_empty_folder_says_so(tmp_path):
    assert "No finished runs" in write_report(tmp_path).read_text()


# ---------------------------------------------------------------------------------------------
# a real browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _need_browser():
    missing = None
    if not Path(CHROMIUM).exists():
        missing = "chromium is not installed (apt-get install -y chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "the playwright package is missing (pip install -e '.[dev]')"
        sync_playwright = None
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


def _tiny_experiment():
    from badgerlab.experiment import Experiment, ExperimentConfig
    from badgerlab.runs import Claim

    def train(cfg, run):
        return {"x": [0.1, 0.4, 0.8]}

    def plots(cfg, results, run):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(results["x"])
        run.save_figure(fig, "tiny", caption="a rising line; look for it going up")
        plt.close(fig)

    def claims(cfg, results):
        return [
            Claim.measure(
                "tiny-up",
                "the line ends high",
                [results["x"][-1]],
                op=">=",
                threshold=0.5,
                paper="0.9",
            ),  # fmt: skip
            Claim.measure("tiny-start", "where it starts", [results["x"][0]]),
        ]

    return Experiment(name="tiny", paper="Nobody, A tiny paper, 2026", bibtex="@misc{tiny}",
                      description="a fake experiment for the report test",
                      minutes={"smoke": 0.01, "quick": 0.01}, Config=ExperimentConfig,
                      train=train, plots=plots, claims=claims)  # fmt: skip


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.timeout(300)
def test_report_renders_in_headless_chromium(tmp_path, monkeypatch):
    sync_playwright = _need_browser()
    from badgerlab.experiments import registry
    from badgerlab.runner import reproduce

    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "empty"))  # paper variants: skipped
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(registry(), "tiny", _tiny_experiment())
    out = tmp_path / "runs"
    md, crashed = reproduce(only=["online-learners", "tiny"], scale="smoke", out=out, quiet=True)
    assert crashed == []
    page_file = md.with_suffix(".html")
    shot = tmp_path / "report.png"
    errors: list[str] = []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(page_file.as_uri(), wait_until="load")
            widths = page.evaluate(
                "Promise.all([...document.images].map(i => i.decode().then("
                "() => i.naturalWidth, () => 0)))"
            )
            targets = page.evaluate(
                "[...document.querySelectorAll('table.summary a')].map("
                "a => !!document.getElementById(a.getAttribute('href').slice(1)))"
            )
            smoke_style = page.evaluate(
                "getComputedStyle(document.querySelector('span.status.smoke')).fontStyle"
            )
            folded = page.locator("details.info-rows table").first
            hidden_before = not folded.is_visible()
            page.locator("details.info-rows summary").first.click()
            shown_after = folded.is_visible()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    assert len(widths) == 2 and all(w > 0 for w in widths), widths  # both plots decoded
    assert targets and all(targets)  # every summary row links to a section that exists
    assert smoke_style == "italic"
    assert hidden_before and shown_after  # info rows folded until opened
    assert errors == []
    w, h = _png_size(shot)
    assert w == 1280 and h > 900


def test_a_single_run_folder_is_refused_with_the_root_to_use(tmp_path):
    run = tmp_path / "online-learners" / "20260101T000000Z-s0"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(RunError, match="is one run folder; give the root"):
        write_report(run)
