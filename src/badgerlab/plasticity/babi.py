"""bAbI question answering: a seeded generator of tasks 1 and 2 in bAbI's text format, and a
reader for the real files (tasks_1-20_v1-2, fetched by `badgerlab datasets --download babi`).

The format (Weston et al. 2015, https://arxiv.org/abs/1502.05698): one sentence a line, each
line numbered from 1 within its story (a line numbered 1 starts a new story); a question line
is `<id> <question>\\t<answer>\\t<supporting fact ids>`:

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary? \\tbathroom\\t1

Task 1 (single supporting fact) asks where a person is; task 2 (two supporting facts) where an
object is, which needs the fact that someone took or dropped it and where that person was.
The generator uses the real tasks' vocabulary: 4 people, 6 places, 3 objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "FOLDER",
    "TASKS",
    "Line",
    "Sample",
    "format_stories",
    "generate",
    "load_task",
    "parse",
    "read_file",
    "samples",
    "task_file",
    "tokenize",
]

FOLDER = "tasks_1-20_v1-2"
TASKS = {1: "single-supporting-fact", 2: "two-supporting-facts"}
PEOPLE = ("Mary", "John", "Daniel", "Sandra")
PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("football", "apple", "milk")
MOVES = ("moved to the", "went to the", "journeyed to the", "travelled to the", "went back to the")
TAKES = ("got the {} there", "picked up the {} there", "grabbed the {} there", "took the {} there")
DROPS = ("dropped the {}", "discarded the {}", "put down the {}", "left the {}")


@dataclass(frozen=True)
class Line:
    """One numbered line of a story: a fact (`answer` None) or a question with its answer and
    the ids of its supporting facts."""

    id: int
    text: str
    answer: str | None = None
    supports: tuple[int, ...] = ()

    @property
    def is_question(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class Sample:
    """A question with the facts of its story before it (oldest first)."""

    facts: tuple[str, ...]
    question: str
    answer: str
    supports: tuple[int, ...]


def _check_task(task: int) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")


def parse(text: str) -> list[list[Line]]:
    """Stories of a bAbI file's text; a line numbered 1 starts a new story.

    >>> [len(s) for s in parse("1 Mary went to the garden.\\n2 Where is Mary? \\tgarden\\t1\\n")]
    [2]
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    stories: list[list[Line]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        head, _, rest = raw.partition(" ")
        if not head.isdigit() or not rest:
            raise ValueError(f"line {n}: expected '<id> <sentence>', got {raw!r}")
        idx = int(head)
        if idx == 1:
            stories.append([])
        elif not stories or stories[-1][-1].id + 1 != idx:
            raise ValueError(f"line {n}: id {idx} does not follow the story's previous line")
        if "\t" in rest:
            parts = rest.split("\t")
            if len(parts) < 2 or not parts[1].strip():
                raise ValueError(f"line {n}: a question needs '\\t<answer>', got {raw!r}")
            sup = tuple(int(s) for s in parts[2].split()) if len(parts) > 2 else ()
            stories[-1].append(Line(idx, parts[0].strip(), parts[1].strip(), sup))
        else:
            stories[-1].append(Line(idx, rest.strip()))
    return stories


def format_stories(stories: list[list[Line]]) -> str:
    """bAbI's text for `stories` (inverse of `parse`), question lines as the real files write
    them: `<id> <question> \\t<answer>\\t<ids>`."""
    out = []
    for story in stories:
        for ln in story:
            if ln.is_question:
                ids = " ".join(map(str, ln.supports))
                out.append(f"{ln.id} {ln.text} \t{ln.answer}\t{ids}")
            else:
                out.append(f"{ln.id} {ln.text}")
    return "\n".join(out) + "\n"


def read_file(path: str | Path) -> list[list[Line]]:
    """Parse one bAbI file (e.g. `qa1_single-supporting-fact_train.txt`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    return parse(path.read_text(encoding="utf-8"))


def task_file(task: int, split: str, *, size: str = "1k") -> str:
    """The file's path under the data root, e.g. `tasks_1-20_v1-2/en/qa1_..._train.txt`."""
    _check_task(task)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if size not in ("1k", "10k"):
        raise ValueError(f"size must be '1k' or '10k', got {size!r}")
    lang = "en" if size == "1k" else "en-10k"
    return f"{FOLDER}/{lang}/qa{task}_{TASKS[task]}_{split}.txt"


def load_task(
    task: int, split: str, *, size: str = "1k", root: str | Path | None = None,
    download: bool = False,
) -> list[list[Line]]:  # fmt: skip
    """Stories of real bAbI task `task` (1 or 2): from `root`, else wherever the dataset
    registry finds `babi` (BADGERLAB_DATA, the cache), fetching it first when `download`."""
    rel = task_file(task, split, size=size)
    if root is None:
        from badgerlab.data import DatasetError, cache_dir, locate

        where = locate("babi")
        if where is None and download:
            from badgerlab.data.download import fetch

            fetch("babi", cache=cache_dir())
            where = locate("babi")
        if where is None:
            raise DatasetError(
                "bAbI not found in BADGERLAB_DATA or the cache; fetch it with "
                "`badgerlab datasets --download babi`"
            )
        root = where[1]
    return read_file(Path(root) / rel)


def samples(stories: list[list[Line]]) -> list[Sample]:
    """One `Sample` per question: the story's facts before it, the question, the answer."""
    out = []
    for story in stories:
        facts: list[tuple[int, str]] = []
        for ln in story:
            if ln.is_question:
                # supporting ids count every line; re-number them by position among the facts
                pos = {i: k + 1 for k, (i, _) in enumerate(facts)}
                sup = tuple(pos[s] for s in ln.supports if s in pos)
                out.append(Sample(tuple(t for _, t in facts), ln.text, ln.answer or "", sup))
            else:
                facts.append((ln.id, ln.text))
    return out


_WORD = re.compile(r"[a-z]+")


def tokenize(sentence: str) -> list[str]:
    """Lower-case words without punctuation: `"Where is Mary?"` → `["where", "is", "mary"]`."""
    return _WORD.findall(sentence.lower())


def _pick(seq, g: torch.Generator):
    return seq[int(torch.randint(len(seq), (1,), generator=g))]


class _World:
    """Where each person is, who holds what, where dropped objects lie, and the line ids that
    established each (the supporting facts)."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[str, int]] = {}  # person → (place, line id of the move)
        self.holder: dict[str, tuple[str, int]] = {}  # object → (person, line of the taking)
        self.lying: dict[str, tuple[str, int, int]] = {}  # object → (place, drop line, move)

    def answer(self, obj: str) -> tuple[str, tuple[int, ...]] | None:
        if obj in self.holder:
            who, took = self.holder[obj]
            if who in self.at:
                place, moved = self.at[who]
                return place, tuple(sorted((took, moved)))
        if obj in self.lying:
            place, dropped, moved = self.lying[obj]
            return place, tuple(sorted((dropped, moved)))
        return None


def _event(w: _World, g: torch.Generator, task: int) -> tuple[str, tuple[str, str, str]]:
    """One random fact of the task, applied to the world; the caller numbers the line."""
    u = float(torch.rand(1, generator=g))
    held = {who for who, _ in w.holder.values()}
    free = [o for o in OBJECTS if o not in w.holder]
    carriers = sorted(held)
    if task == 2 and u < 0.25 and free:
        who, obj = _pick(PEOPLE, g), _pick(free, g)
        return f"{who} {_pick(TAKES, g).format(obj)}.", ("take", who, obj)
    if task == 2 and u < 0.4 and carriers:
        who = _pick(carriers, g)
        obj = _pick(sorted(o for o, (p, _) in w.holder.items() if p == who), g)
        return f"{who} {_pick(DROPS, g).format(obj)}.", ("drop", who, obj)
    who = _pick(PEOPLE, g)
    here = w.at.get(who, (None, 0))[0]
    place = _pick([p for p in PLACES if p != here], g)
    return f"{who} {_pick(MOVES, g)} {place}.", ("move", who, place)


def _apply(w: _World, what: tuple[str, str, str], line: int) -> None:
    kind, who, x = what
    if kind == "move":
        w.at[who] = (x, line)
    elif kind == "take":
        w.holder[x] = (who, line)
        w.lying.pop(x, None)
    else:
        del w.holder[x]
        if who in w.at:
            w.lying[x] = (w.at[who][0], line, w.at[who][1])
        else:  # dropped where nobody knows: no answer until someone takes it again
            w.lying.pop(x, None)


def _story(task: int, questions: int, g: torch.Generator) -> list[Line]:
    w, lines = _World(), []
    while sum(ln.is_question for ln in lines) < questions:
        for _ in range(2 if task == 1 else int(torch.randint(2, 5, (1,), generator=g))):
            text, what = _event(w, g, task)
            lines.append(Line(len(lines) + 1, text))
            _apply(w, what, len(lines))
        if task == 1:
            who = _pick(sorted(w.at), g)
            place, moved = w.at[who]
            lines.append(Line(len(lines) + 1, f"Where is {who}?", place, (moved,)))
            continue
        known = [o for o in OBJECTS if w.answer(o) is not None]
        if known:
            obj = _pick(known, g)
            place, sup = w.answer(obj)
            lines.append(Line(len(lines) + 1, f"Where is the {obj}?", place, sup))
    return lines


def generate(task: int, n_stories: int, *, seed: int, questions: int = 5) -> list[list[Line]]:
    """`n_stories` stories of bAbI-style task 1 or 2, `questions` questions each, seeded.

    Task 1: two moves, then "Where is <person>?" about someone whose place is known. Task 2:
    2–4 facts (moves, takings, drops), then "Where is the <object>?" about an object that is
    held by someone whose place is known, or was dropped where its carrier was.

    >>> format_stories(generate(1, 1, seed=0, questions=1)).splitlines()[-1]
    '3 Where is Sandra? \\tgarden\\t2'
    """
    _check_task(task)
    for name, val in (("n_stories", n_stories), ("questions", questions)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    g = torch.Generator().manual_seed(int(seed))
    return [_story(task, questions, g) for _ in range(n_stories)]
