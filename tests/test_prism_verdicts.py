"""Prism's `reference` mode against hand-written verdicts of the paper's protocol (tests/prism_verdicts.py),
its `lenient` mode on replies without the answer format, and the released scorer's re-implementation
(tests/caprl_released_scorer.py) disagreeing with it only where DELIBERATE_DIFFERENCES says so."""

from __future__ import annotations

import pytest

from prism.score import DELIBERATE_DIFFERENCES, NoAnswer, score_reply
from tests.caprl_released_scorer import released_reward
from tests.prism_verdicts import REPLIES, cases, reference_verdict, released_disagreements, same

CASES = cases()


def test_the_table_is_held_out_sized_and_covers_every_difference():
    assert len(CASES) >= 80
    assert {d for *_, d in CASES if d} == set(DELIBERATE_DIFFERENCES)


@pytest.mark.parametrize("reply,gold,metric,verdict,differs", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_reference_mode_gives_the_protocols_verdict(reply, gold, metric, verdict, differs):
    assert same(reference_verdict(reply, gold, metric), verdict)


@pytest.mark.parametrize("reply,gold,metric,verdict", [(r, g, m, v) for r, g, m, _, v, _ in REPLIES])
def test_lenient_mode_also_reads_replies_without_the_format(reply, gold, metric, verdict):
    try:
        assert score_reply(reply, [gold], metric, "lenient") == verdict
    except NoAnswer:
        assert verdict == 0.0


def test_the_released_scorer_differs_exactly_where_a_deliberate_difference_is_listed():
    assert released_disagreements() == [c for c in CASES if c[4]]


@pytest.mark.parametrize("name", sorted(DELIBERATE_DIFFERENCES))
def test_each_deliberate_difference_has_a_case_where_the_released_scorer_says_otherwise(name):
    cases = [c for c in CASES if c[4] == name]
    assert cases
    for reply, gold, metric, verdict, _ in cases:
        assert not same(released_reward(reply, gold, metric), verdict)
