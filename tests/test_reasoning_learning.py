"""Online preference learning of the reasoning draft (reasoning/preference.py, step_learner.py) and the
lookahead-reasoning benchmark (reasoning/stream_bench.py), on tiny models."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch

from onlinespec.models.tiny import char_tokenizer, tiny_llama
from onlinespec.online.state_store import load_state, save_state
from onlinespec.reasoning.lookahead import PreferencePair
from onlinespec.reasoning.preference import dpo_loss, sft_loss, step_logprob
from onlinespec.reasoning.step_learner import StepLearnerConfig, StepPreferenceLearner
from onlinespec.reasoning.stream_bench import ReasonBenchSettings, run_reason_bench, summarize

PAIR = PreferencePair(("First we add.\n\n",), "So 2 + 3 = 5.\n\n", "So 2 - 3 = 1.\n\n")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def fresh_draft():
    return tiny_llama(seed=1, vocab=98, layers=1)


def context_ids(tok, pair=PAIR) -> list[int]:
    return tok("Add 2 and 3." + "".join(pair.context), add_special_tokens=False)["input_ids"]


def test_dpo_loss_by_hand():
    # beta * margin = 0.1 * ((-3 - -4) - (-5 - -4.5)) = 0.1 * (1 + 0.5) = 0.15; -log sigmoid(0.15) = log(1 + e^-0.15)
    loss = dpo_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5]), 0.1)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.15)), rel=1e-6)
    # two pairs: the mean; a zero margin gives log 2
    two = dpo_loss(
        torch.tensor([-3.0, -1.0]),
        torch.tensor([-5.0, -2.0]),
        torch.tensor([-4.0, -1.0]),
        torch.tensor([-4.5, -2.0]),
        0.1,
    )
    assert float(two) == pytest.approx((math.log1p(math.exp(-0.15)) + math.log(2)) / 2, rel=1e-6)
    assert float(sft_loss(torch.tensor([-6.0, -2.0]), torch.tensor(4.0))) == pytest.approx(2.0)


def test_step_logprob_is_the_sum_of_the_steps_token_log_probs(tok):
    model = fresh_draft()
    ctx, step = [5, 6, 7], [8, 9]
    logits = model(input_ids=torch.tensor([ctx + step])).logits[0]
    hand = torch.log_softmax(logits[2], -1)[8] + torch.log_softmax(logits[3], -1)[9]
    assert float(step_logprob(model, ctx, step)) == pytest.approx(float(hand), abs=1e-5)


def test_one_dpo_update_is_adams_first_step_on_minus_beta_half_the_log_prob_difference(tok):
    """With reference = the current draft the margin is 0, so the gradient is -beta/2 (grad log pi_w - grad log pi_l);
    it is clipped to norm 1, and Adam's first step moves each weight by lr * g / (|g| + eps)."""
    config = StepLearnerConfig("dpo", lr=1e-3, beta=0.1, clip=1.0)
    learner = StepPreferenceLearner(fresh_draft(), tok, config)
    before = {n: p.detach().clone() for n, p in learner.params.items()}
    learner.add(context_ids(tok), PAIR)
    stats = learner.update()
    assert stats["pairs"] == 1 and stats["loss"] == pytest.approx(math.log(2), rel=1e-6)

    hand = fresh_draft()
    hand.requires_grad_(True)
    enc = learner.encode(context_ids(tok), PAIR)
    chosen, rejected = step_logprob(hand, enc.context, enc.chosen), step_logprob(hand, enc.context, enc.rejected)
    objective = -(0.1 / 2) * (chosen - rejected)
    objective.backward()
    grads = {n: p.grad for n, p in hand.named_parameters()}
    norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
    assert stats["grad_norm"] == pytest.approx(float(norm), rel=1e-4)
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))
    for name, p in learner.params.items():
        g = grads[name] * scale
        expected = before[name] - 1e-3 * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, atol=2e-6, rtol=1e-4)
    assert learner.buffer == [] and learner.updates == 1


def test_online_sft_lowers_the_chosen_steps_loss_and_dpo_widens_the_margin(tok):
    enc_ctx = context_ids(tok)
    for method in ("sft", "dpo"):
        learner = StepPreferenceLearner(fresh_draft(), tok, StepLearnerConfig(method, lr=3e-3))
        enc = learner.encode(enc_ctx, PAIR)

        def margin(learner=learner, enc=enc):
            with torch.no_grad():
                w = step_logprob(learner.model, enc.context, enc.chosen)
                lo = step_logprob(learner.model, enc.context, enc.rejected)
            return float(w), float(w - lo)

        chosen0, margin0 = margin()
        for _ in range(5):
            learner.add(enc_ctx, PAIR)
            learner.update()
        chosen1, margin1 = margin()
        if method == "sft":
            assert chosen1 > chosen0 + 1.0
        else:
            assert margin1 > margin0 + 1.0


def test_state_round_trip_then_the_same_next_update(tok, tmp_path):
    a = StepPreferenceLearner(fresh_draft(), tok, StepLearnerConfig("dpo", lr=1e-3))
    a.add(context_ids(tok), PAIR)
    a.update()
    a.add(context_ids(tok), PAIR)  # one pair waits in the buffer when the state is saved
    save_state(tmp_path, *a.state())
    b = StepPreferenceLearner(fresh_draft(), tok, StepLearnerConfig("dpo", lr=1e-3))
    tensors, learner_state, info = load_state(tmp_path)
    b.load(tensors, learner_state)
    assert b.updates == 1 and len(b.buffer) == 1 and info["config"]["method"] == "dpo"
    a.update()
    b.update()
    for name, p in a.params.items():
        torch.testing.assert_close(p, b.params[name], rtol=0, atol=0)


def test_lora_trains_only_the_adapters(tok):
    learner = StepPreferenceLearner(fresh_draft(), tok, StepLearnerConfig("dpo", lr=1e-2, lora_rank=4))
    assert learner.params and all("lora_" in n for n in learner.params)
    frozen = {n: p.detach().clone() for n, p in learner.model.named_parameters() if "lora_" not in n}
    adapters = {n: p.detach().clone() for n, p in learner.params.items()}
    for _ in range(2):  # LoRA's B starts at zero: A moves only from the second step
        learner.add(context_ids(tok), PAIR)
        learner.update()
    for n, p in learner.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(not torch.equal(p, adapters[n]) for n, p in learner.params.items())


def test_bad_learning_settings_are_user_errors(tok):
    from onlinespec.errors import UserError

    for config in (StepLearnerConfig("ppo"), StepLearnerConfig("dpo", lr=0), StepLearnerConfig("dpo", lora_rank=-1)):
        with pytest.raises(UserError):
            StepPreferenceLearner(fresh_draft(), tok, config)


# --- the benchmark --------------------------------------------------------------------------------------------------

SETTINGS = ReasonBenchSettings(
    target="tiny",
    draft="tiny",
    problems=3,
    judge="overlap",
    depth=2,
    max_new_tokens=24,
    max_step_tokens=6,
    round_problems=2,
    lr=1e-3,
)


def models(tok):
    return (tiny_llama(seed=0, vocab=98, layers=2), tok), (fresh_draft(), tok)


def strip_times(rows: list[dict]) -> list[dict]:
    rows = copy.deepcopy(rows)
    for r in rows:
        for m in r["methods"].values():
            m.pop("seconds")
            if m["update"]:
                m["update"].pop("seconds")
    return rows


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "problems.jsonl").read_text().splitlines()]


def test_bench_runs_all_methods_and_its_summary_is_the_arithmetic_of_its_rows(tok, tmp_path):
    target, draft = models(tok)
    summary = run_reason_bench(SETTINGS, tmp_path, target, draft, progress=False)
    rows = read_rows(tmp_path)
    assert [r["index"] for r in rows] == [0, 1, 2] and summary["problems"] == 3 and summary["lossless"] is False
    assert set(summary["methods"]) == {"target", "draft", "lr-frozen", "lr-sft", "lr-dpo"}
    # updates after problems 2 and 3 (rounds of 2 problems; the last round is short), for the learners only
    for m in ("lr-sft", "lr-dpo"):
        assert [r["methods"][m]["update"] is not None for r in rows] == [False, True, True]
    assert all(r["methods"]["lr-frozen"]["update"] is None for r in rows)
    for m, v in summary["methods"].items():
        tokens = sum(r["methods"][m]["tokens"] for r in rows)
        seconds = sum(r["methods"][m]["seconds"]["total"] for r in rows)
        assert v["tokens"] == tokens and v["tokens_per_s"] == pytest.approx(tokens / seconds)
        same = sum(r["methods"][m]["answer"] == r["methods"]["target"]["answer"] for r in rows)
        assert v["answers_equal_to_target"] == pytest.approx(same / 3)
    lr = summary["methods"]["lr-dpo"]
    rounds = sum(r["methods"]["lr-dpo"]["rounds"] for r in rows)
    assert lr["step_acceptance"] == pytest.approx(sum(r["methods"]["lr-dpo"]["accepted"] for r in rows) / rounds)
    assert summary["methods"]["target"]["speedup_vs_target"] == pytest.approx(1.0)
    assert (tmp_path / "results.json").is_file() and (tmp_path / "report.md").read_text().startswith("# Lookahead")
    assert summary["plot"] == "step_acceptance.png" and (tmp_path / "step_acceptance.png").is_file()


def test_summary_ratios_by_hand():
    def row(acc_frozen, acc_dpo):
        def m(acc, tokens, s):
            return {
                "tokens": tokens,
                "seconds": {"total": s},
                "rounds": 2,
                "accepted": acc,
                "drafted": 4,
                "pairs": 0,
                "answer": "5",
            }

        return {
            "gold": "5",
            "methods": {"target": m(0, 10, 5.0), "lr-frozen": m(acc_frozen, 10, 4.0), "lr-dpo": m(acc_dpo, 10, 2.0)},
        }

    settings = ReasonBenchSettings(methods=("target", "lr-frozen", "lr-dpo"))
    rows = [row(1, 1), row(1, 2), row(1, 4)]  # the last third is the last row: 4/2 vs 1/2 accepted per round
    s = summarize(settings, rows)["methods"]
    assert s["lr-dpo"]["last_third_vs_frozen"] == pytest.approx(4.0)
    assert s["lr-dpo"]["step_acceptance"] == pytest.approx(7 / 6)
    assert s["lr-dpo"]["speedup_vs_target"] == pytest.approx((30 / 6) / (30 / 15))
    assert s["lr-frozen"]["answers_equal_to_gold"] == 1.0


def test_bench_resumes_after_a_kill_to_what_an_uninterrupted_run_writes(tok, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_reason_bench(SETTINGS, whole, *models(tok), progress=False)
    # what a kill after problem 3's row but before its update's state leaves: the newest snapshots gone, a cut line
    shutil.copytree(whole, cut)
    for m in ("lr-sft", "lr-dpo"):
        root = cut / "state" / m
        snapshots = sorted(p for p in root.iterdir() if p.name.startswith("state-"))
        shutil.rmtree(snapshots[-1])
        (root / "LATEST").write_text(snapshots[-2].name)
    with open(cut / "problems.jsonl", "a") as fh:
        fh.write('{"index": 3, "sour')
    (cut / "results.json").unlink()
    run_reason_bench(SETTINGS, cut, *models(tok), progress=False)
    assert strip_times(read_rows(cut)) == strip_times(read_rows(whole))
    for m in ("lr-sft", "lr-dpo"):
        a, b = load_state(whole / "state" / m), load_state(cut / "state" / m)
        assert a[2]["problems_done"] == b[2]["problems_done"] == 3
        for name, t in a[0].items():
            assert torch.equal(t, b[0][name])


def test_bench_refuses_to_resume_with_other_settings(tok, tmp_path):
    from dataclasses import replace

    from onlinespec.errors import UserError

    run_reason_bench(replace(SETTINGS, problems=1, methods=("target",)), tmp_path, *models(tok), progress=False)
    with pytest.raises(UserError, match="other settings"):
        run_reason_bench(replace(SETTINGS, problems=2, methods=("target",)), tmp_path, *models(tok), progress=False)


def test_with_several_steps_per_round_the_reference_stays_the_draft_at_the_rounds_start(tok):
    learner = StepPreferenceLearner(fresh_draft(), tok, StepLearnerConfig("dpo", lr=1e-3, steps_per_update=2))
    enc = learner.encode(context_ids(tok), PAIR)
    with torch.no_grad():
        ref_w, ref_l = (step_logprob(learner.model, enc.context, s) for s in (enc.chosen, enc.rejected))
    learner.add(context_ids(tok), PAIR)
    one = StepPreferenceLearner(fresh_draft(), tok, StepLearnerConfig("dpo", lr=1e-3))
    one.add(context_ids(tok), PAIR)
    one.update()  # the same first step
    with torch.no_grad():
        pi_w, pi_l = (step_logprob(one.model, enc.context, s) for s in (enc.chosen, enc.rejected))
    stats = learner.update()
    assert stats["loss"] == pytest.approx(math.log(2), rel=1e-6)
    # the second step's loss: the policy after step one against the round-start reference (not against itself)
    expected = float(dpo_loss(pi_w[None], pi_l[None], ref_w[None], ref_l[None], 0.1))
    assert stats["loss_last"] == pytest.approx(expected, rel=1e-4) and expected < math.log(2)
