"""Lookahead reasoning (reasoning/): steps, the batched step writer, the accept rule, pairs and judges, on tiny
models with a real character-level tokenizer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onlinespec.models.tiny import char_tokenizer, tiny_llama
from onlinespec.reasoning.judges import (
    ExactJudge,
    NumbersThenTargetJudge,
    OverlapJudge,
    TargetJudge,
    make_judge,
    normalise,
    numbers,
)
from onlinespec.reasoning.lookahead import accepted_steps, judged, kept_steps, lookahead_round
from onlinespec.reasoning.problems import answer_value
from onlinespec.reasoning.solve import solve_alone, solve_lookahead, target_tokens
from onlinespec.reasoning.step_writer import StepWriter
from onlinespec.reasoning.steps import split_steps, step_end

PROBLEM = "Add 2 and 3."


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def target():
    return tiny_llama(seed=0, vocab=98, layers=2)


@pytest.fixture(scope="module")
def draft():
    return tiny_llama(seed=1, vocab=98, layers=1)


# --- steps ----------------------------------------------------------------------------------------------------------


def test_split_steps_examples():
    assert split_steps("a\n\nb\n\n\nc") == ["a\n\n", "b\n\n\n", "c"]
    assert split_steps("one step") == ["one step"]
    assert split_steps("") == []
    assert step_end("x = 1\n\ny") == 7
    assert step_end("x = 1\ny") is None
    assert step_end("\n\nx\n\n") == 5 and step_end("\n\n") is None and split_steps("\n\na\n\nb") == ["\n\na\n\n", "b"]


@given(st.text(alphabet="ab \n", max_size=40))
def test_split_steps_round_trip_and_every_step_but_the_last_ends(text):
    steps = split_steps(text)
    assert "".join(steps) == text
    assert all(s for s in steps)
    for s in steps[:-1]:  # a finished step: its first blank line, then only newlines
        assert step_end(s) is not None and set(s[step_end(s) :]) <= {"\n"}
    assert all(not s.startswith("\n") for s in steps[1:])  # newlines after a blank line stay with its step
    assert all(s.strip() for s in steps[:-1])  # no step of only whitespace
    assert step_end(steps[-1]) is None or set(steps[-1][step_end(steps[-1]) :]) <= {"\n"} if steps else True


# --- the step writer ------------------------------------------------------------------------------------------------


def test_the_rows_after_each_drafted_prefix_write_what_each_writes_alone(target, tok):
    steps, drafted = ["Go: "], ["First, 2\n\n", "then 3 and more\n\n", "so 5"]
    writer = StepWriter(target, tok, PROBLEM, chat=False)
    writer.write(["Go: ", "x"], 5)  # a cache holding another context first: cropped to the common prefix
    batched = writer.write_after_each(steps, drafted, 20)
    alone = [StepWriter(target, tok, PROBLEM, chat=False).write(steps + drafted[:i], 20) for i in range(3)]
    assert batched == alone
    assert all(s.tokens == 20 and not s.finished for s in batched)


def test_a_rejected_row_ends_the_rows_after_it_and_only_those(target, tok):
    drafted = ["a\n\n", "b\n\n", "c\n\n", "d\n\n"]
    seen = []

    def keep_going(i, step):
        seen.append(i)
        return i != 1

    rows = StepWriter(target, tok, PROBLEM, chat=False).write_after_each([], drafted, 12, keep_going)
    assert rows[2] is None and rows[3] is None and rows[0] is not None and rows[1] is not None
    assert sorted(seen) == [0, 1]
    assert rows[0] == StepWriter(target, tok, PROBLEM, chat=False).write([], 12)


def test_the_cache_kept_across_calls_gives_what_a_fresh_writer_gives(target, tok):
    writer = StepWriter(target, tok, PROBLEM, chat=False)
    first = writer.write(["So\n\n"], 15)
    second = writer.write(["So\n\n", first.text], 15)  # reuses the cache, which holds the first step
    back = writer.write(["Then\n\n"], 15)  # a context that leaves the cached one: cropped, then fed
    assert second == StepWriter(target, tok, PROBLEM, chat=False).write(["So\n\n", first.text], 15)
    assert back == StepWriter(target, tok, PROBLEM, chat=False).write(["Then\n\n"], 15)


def test_a_step_ends_just_after_the_blank_line_or_at_the_end_of_sequence(target, tok):
    writer = StepWriter(target, tok, PROBLEM, chat=False)
    generated: list[int] = []
    results = [writer._advance(generated, t, 100, True) for t in tok("ab\n\ncd", add_special_tokens=False)["input_ids"]]
    assert results[:3] == [None, None, None]
    assert results[3].text == "ab\n\n" and results[3].tokens == 4 and not results[3].finished
    ended = writer._advance([*tok("x=1", add_special_tokens=False)["input_ids"]], tok.eos_token_id, 100, True)
    assert ended.text == "x=1" and ended.finished
    whole: list[int] = []
    assert [writer._advance(whole, t, 100, False) for t in tok("a\n\nb", add_special_tokens=False)["input_ids"]] == [
        None
    ] * 4  # not cut: the whole answer


# --- the accept rule and the round ----------------------------------------------------------------------------------


def test_accept_rule():
    assert accepted_steps([True, True, False, True]) == 2
    assert accepted_steps([False, True]) == 0
    assert accepted_steps([True, True]) == 2
    assert kept_steps(["d1", "d2", "d3"], ["t1", "t2", "t3"], 1) == ["d1", "t2"]
    assert kept_steps(["d1", "d2"], ["t1", "t2"], 2) == ["d1", "d2"]
    assert kept_steps(["d1"], ["t1"], 0) == ["t1"]
    assert judged(True, "", "x = 2") is False and judged(True, "  ", "\n") is True and judged(False, "a", "a") is False


class ScriptedJudge:
    """Accepts exactly the drafted step texts it is given (a judge with known verdicts); records what it judged."""

    name = "scripted"

    def __init__(self, accept: set[str]) -> None:
        self.accept, self.judged = accept, []

    def verdicts(self, context, pairs):
        self.judged += [d for d, _ in pairs]
        return [d in self.accept for d, _ in pairs]


def test_a_round_keeps_the_accepted_drafts_then_the_targets_step_and_pairs_the_first_rejection(target, draft, tok):
    steps = ["Go "]
    ahead = StepWriter(draft, tok, PROBLEM, chat=False)  # what the draft will write, to script the verdicts
    drafted = []
    for _ in range(3):
        drafted.append(ahead.write(steps + drafted, 8).text)
    judge = ScriptedJudge({drafted[0], drafted[2]})
    result = lookahead_round(
        steps, StepWriter(draft, tok, PROBLEM, chat=False), StepWriter(target, tok, PROBLEM, chat=False), judge, 3, 8
    )
    assert [d.text for d in result.drafted] == drafted and len(set(drafted)) == 3
    assert result.verdicts == [True, False] and result.accepted == 1
    assert result.target[2] is None and drafted[2] not in judge.judged  # after the rejection: ended, never judged
    # the target's step i follows the steps + the first i drafted steps
    for i, theirs in enumerate(result.target[:2]):
        assert theirs == StepWriter(target, tok, PROBLEM, chat=False).write(steps + drafted[:i], 8)
    assert result.kept == [drafted[0], result.target[1].text]
    assert result.pair.context == ("Go ", drafted[0])
    assert (result.pair.chosen, result.pair.rejected) == (result.target[1].text, drafted[1])


def test_lookahead_with_the_target_as_its_own_draft_writes_the_targets_answer(target, tok):
    alone = solve_alone(target, tok, PROBLEM, 60, chat=False)
    looked = solve_lookahead(
        PROBLEM, (target, tok), (target, tok), ExactJudge(), depth=3, max_new_tokens=60, max_step_tokens=10, chat=False
    )
    assert looked.accepted == looked.drafted > 0 and not looked.pairs
    # cut to the same budget, counted in the answer text's target tokens (the target wrote one id here that decodes
    # to nothing, so the alone answer's text holds 59 of them)
    assert looked.text.startswith(alone.text) and looked.tokens == target_tokens(tok, looked.text) == 60
    assert "".join(looked.steps) == looked.text and looked.finished == alone.finished
    assert looked.step_acceptance == looked.accepted / looked.rounds


def test_lookahead_with_another_draft_and_an_exact_judge_still_writes_the_targets_answer(target, draft, tok):
    """An exact judge accepts only the target's own steps, so the answer is the target's (whatever the draft)."""
    alone = solve_alone(target, tok, PROBLEM, 40, chat=False)
    looked = solve_lookahead(
        PROBLEM, (draft, tok), (target, tok), ExactJudge(), depth=2, max_new_tokens=40, max_step_tokens=8, chat=False
    )
    assert looked.text.startswith(alone.text) and looked.tokens == target_tokens(tok, looked.text) <= 40
    assert looked.rounds >= 5 and looked.accepted == 0  # a random draft never writes the target's 8 characters
    assert len(looked.pairs) == looked.rounds  # so every round pairs the target's step with the draft's


# --- judges ---------------------------------------------------------------------------------------------------------


def test_exact_and_overlap_judges():
    assert normalise("So, 1,440 degrees.") == normalise("so 1440 degrees")
    assert numbers("1,440 and 3.50 and -2") == [1440.0, 3.5, -2.0]
    exact, overlap = ExactJudge(), OverlapJudge(0.5)
    pairs = [
        ("The sum is 1,440.", "the sum is 1440"),
        ("x = 5", "x = 6"),
        ("Each friend gets 4 apples.", "So each friend receives 4 apples."),
        ("Each friend gets 4 apples.", "We multiply 4 by the price."),
        ("2 + 3 = 5", "2+3=5"),
        ("2 + 3 = 5", "2 - 3 = 5"),
    ]
    assert exact.verdicts("", pairs) == [True, False, False, False, True, False]
    assert overlap.verdicts("", pairs) == [True, False, True, False, True, False]


def test_the_target_judge_reads_yes_against_no_for_each_pair_as_one_forward_would(target, tok):
    judge = TargetJudge(target, tok)
    pairs = [("x = 1\n\n", "x = 1\n\n"), ("we add", "we subtract 3"), ("a", "b c d e f")]
    verdicts = judge.verdicts("Problem", pairs)
    from onlinespec.prompting import encode_prompt
    from onlinespec.reasoning.judges import ALIGNMENT_QUESTION

    for (d, t), verdict in zip(pairs, verdicts, strict=True):
        ids = encode_prompt(tok, ALIGNMENT_QUESTION.format(context="Problem", draft=d, target=t))
        logits = target(input_ids=ids[None]).logits[0, -1]
        assert verdict == bool(logits[judge.yes].max() > logits[judge.no].max())


def test_the_target_judge_shares_the_questions_prefix_and_gives_a_whole_prefill_s_margins(target, tok):
    """A round's questions and the next round's share the instruction, problem and steps so far: the judge feeds
    only what differs, and each margin equals the one a prefill of the whole question gives (fp32 tiny model),
    also after the context outgrew `max_context_chars` (the cut moves the prefix: fed again, still equal)."""
    judge = TargetJudge(target, tok, max_context_chars=60)
    calls = [
        ("Problem: 2 + 3?\n\n", [("x = 1", "x = 1"), ("we add", "we subtract 3")]),
        ("Problem: 2 + 3?\n\nx = 1\n\n", [("we add", "we add 2 and 3")]),
        ("Problem: 2 + 3?\n\nx = 1\n\nwe add 2 and 3\n\n", [("5", "so 5"), ("5", "5")]),
        ("Problem: 2 + 3?\n\nx = 1\n\nwe add 2 and 3\n\nso 5\n\nthen we check it twice over\n\n", [("ok", "ok")]),
    ]
    whole, new, before = 0, 0, []
    for context, pairs in calls:
        margins = judge.margins(context, pairs)
        for (d, t), margin in zip(pairs, margins, strict=True):
            ids = judge.question(context, d, t)
            shared = next((i for i, (a, b) in enumerate(zip(before, ids, strict=False)) if a != b), len(before))
            whole, new, before = whole + len(ids), new + len(ids) - min(shared, len(ids) - 1), ids
            logits = target(input_ids=torch.tensor([ids])).logits[0, -1]
            assert margin == pytest.approx(float(logits[judge.yes].max() - logits[judge.no].max()), abs=1e-4)
    assert len(calls[-1][0]) > 60  # the last context was cut
    assert judge.fed_tokens == new < 0.7 * whole  # only what each question does not share with the one before
    assert judge.verdicts(*calls[0]) == [m > 0 for m in judge.margins(*calls[0])]


def test_the_numbers_then_target_judge_asks_the_target_only_where_the_numbers_agree(target, tok):
    class Counting(TargetJudge):
        asked: list[tuple[str, str]] = []

        def verdicts(self, context, pairs):
            self.asked += pairs
            return super().verdicts(context, pairs)

    target_judge = Counting(target, tok)
    judge = NumbersThenTargetJudge(target_judge)
    pairs = [("x = 1 + 2", "we get 1 + 2"), ("so 3 apples", "so 4 apples"), ("add them", "we add"), ("2, 3", "3, 2")]
    verdicts = judge.verdicts("Problem", pairs)
    assert target_judge.asked == [pairs[0], pairs[2]]  # the numbers differ in the other two: no forward for them
    said = TargetJudge(target, tok).verdicts("Problem", [pairs[0], pairs[2]])
    assert verdicts == [said[0], False, said[1], False]
    assert judge.verdicts("Problem", [pairs[1]]) == [False] and len(target_judge.asked) == 2  # nothing asked
    assert make_judge("numbers-target", target, tok).name == "numbers-target"


def test_answer_value():
    assert answer_value("so 3 + 4 = 7\n\nAnswer: 1,440 degrees") == "1440"
    assert answer_value("the total is 16.50 and then 2") == "2"
    assert answer_value("Answer: 7.2000") == "7.2"
    assert answer_value("Answer: 3/4") == "3/4"
    assert answer_value("no number") is None
    assert answer_value("[282.6]") == "282.6"


def test_a_batched_write_needs_a_nonempty_problem(target, tok):
    with pytest.raises(ValueError):
        StepWriter(target, tok, "", chat=False)
    assert torch.is_grad_enabled()


def test_reason_commands_refuse_bad_input_with_one_line(capsys, tmp_path):
    from onlinespec.cli import main

    assert main(["reason", "   "]) == 2
    assert "the problem is empty" in capsys.readouterr().err
    assert main(["reason", "2+2?", "--draft-state", str(tmp_path / "state"), "--learn", "none"]) == 2
    assert "--draft-state keeps a learned draft" in capsys.readouterr().err
    assert main(["reason-bench", "--methods", "target,magic"]) == 2
    assert "unknown method(s) ['magic']" in capsys.readouterr().err
    assert main(["reason-bench", "--depth", "0"]) == 2
    assert "--depth must be >= 1" in capsys.readouterr().err
