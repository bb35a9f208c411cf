"""bAbI: the reader parses the real format, the generator's stories are answered by an
independent rule-based solver, generation is seeded, and real files are found under a root."""

from __future__ import annotations

import re

import pytest

from badgerlab.plasticity import babi

REAL = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Sandra moved to the garden.
6 Where is Daniel? \thallway\t4
1 Mary got the milk there.
2 John moved to the bedroom.
3 Mary travelled to the hallway.
4 Where is the milk? \thallway\t1 3
5 Mary discarded the milk.
6 Where is the milk? \thallway\t5 3
"""


def test_reader_parses_the_real_format(tmp_path):
    path = tmp_path / babi.task_file(2, "train")
    path.parent.mkdir(parents=True)
    path.write_text(REAL)
    stories = babi.load_task(2, "train", root=tmp_path)
    assert [len(s) for s in stories] == [6, 6]
    q = stories[1][3]
    assert q == babi.Line(4, "Where is the milk?", "hallway", (1, 3))
    assert not stories[1][2].is_question and stories[1][2].text == "Mary travelled to the hallway."
    got = babi.samples(stories)
    assert [s.answer for s in got] == ["bathroom", "hallway", "hallway", "hallway"]
    # facts before the question only; supporting ids renumbered over facts (line 5 -> fact 4)
    assert got[1].facts == (
        "Mary moved to the bathroom.", "John went to the hallway.",
        "Daniel went back to the hallway.", "Sandra moved to the garden.",
    )  # fmt: skip
    assert got[1].supports == (3,) and got[3].supports == (4, 3)
    assert babi.tokenize(q.text) == ["where", "is", "the", "milk"]
    assert babi.format_stories(stories) == REAL


@pytest.mark.parametrize(
    "text, match",
    [
        ("x Mary moved.\n", "line 1"),
        ("1 Mary moved.\n3 John moved.\n", "line 2: id 3"),
        ("2 Mary moved.\n", "line 1: id 2"),
        ("1 Where is Mary?\t\t1\n", "line 1: a question"),
    ],
)
def test_reader_rejects_malformed_lines(text, match):
    with pytest.raises(ValueError, match=match):
        babi.parse(text)


MOVE = re.compile(r"^(\w+) (?:moved|went|journeyed|travelled|went back) (?:back )?to the (\w+)\.$")
TAKE = re.compile(r"^(\w+) (?:got|picked up|grabbed|took) the (\w+) there\.$")
DROP = re.compile(r"^(\w+) (?:dropped|discarded|put down|left) the (\w+)\.$")


def solve(story: list[babi.Line]) -> list[tuple[str, set[int]]]:
    """A rule-based reader written from the task descriptions, independent of the generator:
    people are where they last went; an object is where its holder is, or where its holder was
    when it was dropped. Returns (answer, supporting ids) per question."""
    at, holder, lying, out = {}, {}, {}, []
    for ln in story:
        if ln.is_question:
            m = re.fullmatch(r"Where is (?:the )?(\w+)\?", ln.text)
            assert m, ln.text
            x = m.group(1)
            if x in at:  # a person (task 1)
                out.append((at[x][0], {at[x][1]}))
            elif x in holder:
                who, line = holder[x]
                out.append((at[who][0], {line, at[who][1]}))
            else:
                out.append((lying[x][0], {lying[x][1], lying[x][2]}))
            continue
        if m := MOVE.match(ln.text):
            at[m.group(1)] = (m.group(2), ln.id)
        elif m := TAKE.match(ln.text):
            holder[m.group(2)] = (m.group(1), ln.id)
            lying.pop(m.group(2), None)
        elif m := DROP.match(ln.text):
            who = holder.pop(m.group(2))[0]
            assert who == m.group(1)
            if who in at:
                lying[m.group(2)] = (at[who][0], ln.id, at[who][1])
        else:
            raise AssertionError(f"unparsed fact {ln.text!r}")
    return out


@pytest.mark.parametrize("task", [1, 2])
def test_generated_stories_are_answered_by_a_rule_based_solver(task):
    stories = babi.generate(task, 200, seed=3)
    n = 0
    for story in stories:
        questions = [ln for ln in story if ln.is_question]
        assert len(questions) == 5
        for q, (answer, sup) in zip(questions, solve(story), strict=True):
            assert q.answer == answer and set(q.supports) == sup
            assert len(q.supports) == task  # one or two supporting facts
            n += 1
    assert n == 1000
    # the file format round-trips
    assert babi.parse(babi.format_stories(stories)) == stories
    # every place is an answer somewhere: the questions are not all alike
    answers = {ln.answer for s in stories for ln in s if ln.is_question}
    assert answers == set(babi.PLACES)


def test_generation_is_seeded():
    a = babi.format_stories(babi.generate(2, 20, seed=7))
    assert a == babi.format_stories(babi.generate(2, 20, seed=7))
    assert a != babi.format_stories(babi.generate(2, 20, seed=8))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: babi.generate(3, 1, seed=0), "task"),
        (lambda: babi.generate(1, 0, seed=0), "n_stories"),
        (lambda: babi.generate(1, 1, seed=0, questions=0), "questions"),
        (lambda: babi.task_file(1, "valid"), "split"),
        (lambda: babi.task_file(1, "train", size="2k"), "size"),
        (lambda: babi.read_file("/nonexistent/qa1.txt"), "path"),
    ],
)
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_task_file_paths_match_the_archive():
    assert babi.task_file(1, "test") == "tasks_1-20_v1-2/en/qa1_single-supporting-fact_test.txt"
    assert babi.task_file(2, "train", size="10k") == (
        "tasks_1-20_v1-2/en-10k/qa2_two-supporting-facts_train.txt"
    )
