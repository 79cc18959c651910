"""The hybrid draft (drafts/hybrid.py): the lookup's proposal where the request repeats itself, the head's elsewhere.

Greedy equality in fp32 with both parts drafting, which part drafts when, the head's chain cap, the head kept in
step across lookup steps (its drafts equal a head-only draft's at the same context), online learning of the head,
and the spec's refusals.
"""

from __future__ import annotations

import pytest
import torch
from conftest import run_ar, run_spec, tiny_llama
from test_sampling_exact import PASS_P_VALUE, chi2_p_value, exact_two_token_distribution

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, TreeProposal, top_path
from onlinespec.drafts import make_draft
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.heads import build_head
from onlinespec.drafts.hybrid import MIN_MATCH, SHARED_MIN_MATCH, HybridDraft
from onlinespec.drafts.lookup import LookupDraft
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel
from onlinespec.online.learners import LearnerConfig
from onlinespec.online.session import OnlineConfig, OnlineLearning
from onlinespec.online.trainable_draft import TrainableDraft

VOCAB = 96
GREEDY = SamplingConfig(temperature=0.0)


def hybrid(target: torch.nn.Module, head_k: int = 2, seed: int = 0, gate: float = 0.0) -> HybridDraft:
    torch.manual_seed(seed)
    head = EagleDraft(build_head("eagle", target).eval(), "eagle:fresh")
    lookup = LookupDraft(VOCAB, min_ngram=MIN_MATCH, shared_min_ngram=SHARED_MIN_MATCH)  # as make_hybrid_draft
    return HybridDraft(lookup, head, name="hybrid", head_k=head_k, head_min_confidence=gate)


def repeating_prompt(seed: int = 0) -> torch.Tensor:
    """A random 12-token phrase said three times, then its first 3 tokens: the lookup has long matches."""
    phrase = torch.randint(0, VOCAB, (12,), generator=torch.Generator().manual_seed(seed))
    return torch.cat([phrase, phrase, phrase, phrase[:3]])


@pytest.mark.parametrize(("seed", "gate"), [(0, 0.0), (1, 0.0), (2, 0.0), (0, 0.02)])
def test_greedy_output_equals_autoregressive_output_with_both_parts_drafting(seed: int, gate: float) -> None:
    target = tiny_llama(seed=seed)
    draft = hybrid(target, seed=seed, gate=gate)
    engine = SpeculativeEngine(target, draft)
    cfg = GenerationConfig(max_new_tokens=48, k=4)
    for prompt in (repeating_prompt(seed), torch.randint(0, VOCAB, (10,), generator=torch.Generator().manual_seed(9))):
        expected, _ = run_ar(target, prompt, cfg)
        got, stats = run_spec(engine, prompt, cfg)
        assert got == expected and stats.target_forwards < len(got)
    assert draft.steps["lookup"] > 0 and draft.steps["head"] > 0


@pytest.mark.parametrize("traffic", [None, [1, 0, 2, 1, 0, 1]])
def test_engine_sampling_with_the_hybrid_draft_matches_the_target(traffic: list[int] | None) -> None:
    """P(x1, x2 | prompt) under the target's processed sampling (4 tokens: 16 cells, 600 samples), x2 verified
    against the lookup's proposal when (last prompt token, x1) occurred in the prompt, else against the head's,
    whose chain is cut by the confidence gate at some steps. With earlier traffic in the shared index, x1 = 0
    matches its (2, 1, 0) and the source gate decides, from earlier requests' scores, whether it drafts."""
    vocab = 4
    target = tiny_llama(seed=11, vocab=vocab, layers=1)  # one layer: the rule needs no depth; CI time does
    torch.manual_seed(0)
    head = EagleDraft(build_head("eagle", target).eval(), "eagle:fresh")
    draft = HybridDraft(LookupDraft(vocab, min_ngram=2, min_confidence=0.0), head, head_min_confidence=0.3)
    if traffic:
        draft.lookup.learn([torch.tensor(traffic)])
    prompt = torch.tensor([1, 3, 0, 3, 2, 1])  # (1, 3) and (3, 0), (3, 2) occur: x1 = 3 matches, others do not
    sampling = SamplingConfig(temperature=1.0, top_k=3)
    exact = exact_two_token_distribution(target, prompt, sampling)
    engine = SpeculativeEngine(target, draft)
    pairs = []
    new_tokens = 5 if traffic else 3  # with traffic: later steps score the first step's proposal for the gate
    for seed in range(600):
        cfg = GenerationConfig(max_new_tokens=new_tokens, k=2, sampling=sampling, seed=seed)
        tokens, _ = run_spec(engine, prompt, cfg)
        pairs.append(tokens[0] * vocab + tokens[1])
    assert draft.steps["lookup"] > 50 and draft.steps["head"] > 50, draft.steps
    if traffic:
        assert draft.gate.scores["shared"].scored > 50 and draft.gate.held_back > 0, draft.report()
    assert chi2_p_value(torch.tensor(pairs), exact) > PASS_P_VALUE


@pytest.mark.parametrize("gate_on", [True, False])
def test_earlier_traffic_that_is_wrong_is_held_back_and_the_output_stays_the_targets(gate_on: bool) -> None:
    """The shared index learns the target's own output with every fifth new token replaced, the first included:
    its only 4-token matches in this request are the contexts before a replaced token, so each of its proposals
    is wrong. Once the
    head has scored above it, the gate holds them back (the head drafts there); without the gate they draft."""
    target = tiny_llama(seed=8)
    cfg = GenerationConfig(max_new_tokens=40, k=3)
    prompt = torch.randint(0, VOCAB, (10,), generator=torch.Generator().manual_seed(8))
    expected, _ = run_ar(target, prompt, cfg)
    wrong = [(t + 1) % VOCAB if i % 5 == 0 else t for i, t in enumerate(expected)]
    draft = hybrid(target, seed=8)
    draft.gate.enabled = gate_on
    draft.lookup.learn([torch.cat([prompt, torch.tensor(wrong)])])
    draft.gate.scores["head"].add(2)  # as if the head's last proposal had been accepted in full
    got, _ = run_spec(SpeculativeEngine(target, draft), prompt, cfg)
    assert got == expected
    shared = draft.gate.scores["shared"]
    assert shared.scored >= 3 and shared.first_right == 0, draft.report()
    if gate_on:
        assert draft.gate.held_back >= 2 and shared.steps == 1, draft.report()  # only the first drafted
    else:
        assert draft.gate.held_back == 0 and shared.steps >= 3, draft.report()


def test_the_lookup_drafts_where_the_request_repeats_itself_and_the_head_caps_at_head_k() -> None:
    target = tiny_llama(seed=3)
    draft = hybrid(target, head_k=2)
    prompt = repeating_prompt(3)  # the engine proposes once the prefill's token is committed: ids = prompt + 1
    ids = torch.cat([prompt, prompt[3:4]])
    draft.begin(prompt, target(prompt[None], output_hidden_states=True).hidden_states[-1][0])
    proposal = draft.propose(ids, 5, GREEDY, None)
    # the last 4 tokens (the phrase's start) matched: its next tokens, as many as k allows
    assert proposal.tokens.tolist() == prompt[4:9].tolist() and draft.steps == {"lookup": 1, "head": 0}
    fresh = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(4))
    draft.begin(fresh, target(fresh[None], output_hidden_states=True).hidden_states[-1][0])
    proposal = draft.propose(torch.cat([fresh, fresh[:1]]), 5, GREEDY, None)  # no 2-token match in it
    assert proposal.tokens.numel() == 2 and draft.steps == {"lookup": 1, "head": 1}


@pytest.mark.parametrize(("seed", "kind"), [(0, "dynamic"), (1, "static"), (2, "dynamic")])
def test_greedy_output_with_trees_equals_autoregressive_output(seed: int, kind: str) -> None:
    """With a tree requested, lookup steps are verified as chains and head steps as trees: greedy output unchanged."""
    target = tiny_llama(seed=seed)
    draft = hybrid(target, seed=seed)
    engine = SpeculativeEngine(target, draft)
    cfg = GenerationConfig(max_new_tokens=40, tree=TreeConfig(kind, depth=4, top_k=3, total_tokens=10))
    for prompt in (repeating_prompt(seed), torch.randint(0, VOCAB, (10,), generator=torch.Generator().manual_seed(9))):
        expected, _ = run_ar(target, prompt, GenerationConfig(max_new_tokens=40))
        got, stats = run_spec(engine, prompt, cfg)
        assert got == expected and stats.target_forwards < len(got)
    assert draft.steps["lookup"] > 0 and draft.steps["head"] > 0


def test_a_tree_request_gets_the_lookups_chain_where_it_matches_and_the_heads_tree_elsewhere() -> None:
    target = tiny_llama(seed=3)
    draft = hybrid(target)
    tree = TreeConfig("dynamic", depth=3, top_k=2, total_tokens=5)
    prompt = repeating_prompt(3)
    draft.begin(prompt, target(prompt[None], output_hidden_states=True).hidden_states[-1][0])
    chain = draft.propose_tree(torch.cat([prompt, prompt[3:4]]), tree, 4)  # the phrase's start matched
    assert isinstance(chain, Proposal) and chain.tokens.tolist() == prompt[4:8].tolist() and chain.source == "request"
    fresh = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(4))
    draft.begin(fresh, target(fresh[None], output_hidden_states=True).hidden_states[-1][0])
    candidates = draft.propose_tree(torch.cat([fresh, fresh[:1]]), tree, 3)  # no match: the head's tree
    assert isinstance(candidates, TreeProposal) and len(candidates.parents) == 5 and max(candidates.depths) <= 3
    assert draft.steps == {"lookup": 1, "head": 1}


def test_top_path_follows_the_most_probable_child_at_every_node() -> None:
    """Root children 0 (logit 1) and 1 (logit 3); node 1's children 2 (logit 0) and 3 (logit 2); node 0's child 4."""
    logits = torch.full((5, 6), -9.0)
    for node, (token, logit) in enumerate([(5, 1.0), (4, 3.0), (2, 0.0), (1, 2.0), (3, 5.0)]):
        logits[node, token] = logit
    tree = TreeProposal(tokens=torch.tensor([5, 4, 2, 1, 3]), parents=[-1, -1, 1, 1, 0], logits=logits)
    assert top_path(tree).tolist() == [4, 1]  # node 4's logit 5 sits below the less probable root child


def test_the_head_gate_cuts_the_chain_before_the_first_unlikely_token() -> None:
    """prod_{j<i} q_j(x_j) * max q_i < gate cuts before token i; the drawn token's own q never decides its cut."""
    target = tiny_llama(seed=7)
    draft = hybrid(target, gate=0.3)
    q = torch.tensor([[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])  # [3, V]: chain confidence after each
    proposal = Proposal(tokens=torch.tensor([0, 1, 2]), logits=q.log(), probs=q)
    cut = draft._confident_prefix(proposal)  # 0.8 ok; 0.8 * 0.5 = 0.4 ok (x_1 = 1 has q 0.4); 0.8*0.4*0.8 < 0.3
    assert cut.tokens.tolist() == [0, 1] and cut.probs.shape == (2, 3) and cut.logits.shape == (2, 3)
    greedy = draft._confident_prefix(Proposal(tokens=torch.tensor([0, 0, 2]), logits=q.log(), probs=None))
    assert greedy.tokens.tolist() == [0, 0, 2] and greedy.probs is None  # 0.8, 0.4, 0.32: all kept
    draft.head_min_confidence = 0.9
    assert draft._confident_prefix(proposal).tokens.numel() == 0  # nothing: the engine takes a plain step


def test_the_head_stays_in_step_across_lookup_steps() -> None:
    """After a request in which the lookup drafted, the head's proposal at the end equals that of a head-only
    draft fed the same committed tokens and features: hybrid commits keep the head's cache right."""
    target = tiny_llama(seed=5)
    draft = hybrid(target, head_k=3)
    engine = SpeculativeEngine(target, draft)
    prompt = repeating_prompt(5)
    tokens, _ = run_spec(engine, prompt, GenerationConfig(max_new_tokens=30, k=4))
    assert draft.steps["lookup"] > 0
    ids = torch.cat([prompt, torch.tensor(tokens)])
    features = target(ids[None], output_hidden_states=True).hidden_states[-1][0]
    # the engine's last step committed its tokens; the hybrid's head has pending features up to ids[-1]
    alone = EagleDraft(draft.head.model, "eagle")
    alone.begin(ids[:-1], features[:-1])  # f_t pairs with x_{t+1}: one feature fewer than tokens
    expected = alone.propose(ids, 3, GREEDY, None)
    got = draft.head.propose(ids, 3, GREEDY, None)
    assert got.tokens.tolist() == expected.tokens.tolist()
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-4, atol=1e-4)


def test_online_learning_trains_the_head() -> None:
    target = tiny_llama(seed=6)
    draft = hybrid(target)
    assert isinstance(draft, TrainableDraft)
    engine = SpeculativeEngine(target, draft)
    online = OnlineLearning(
        engine, OnlineConfig(learner="ogd", learner_cfg=LearnerConfig(lr=0.5), round_requests=2, schedule="sync")
    )
    before = {n: p.detach().clone() for n, p in draft.model.named_parameters() if n in draft.trainable}
    for seed in range(4):
        _, stats = run_spec(engine, repeating_prompt(seed), GenerationConfig(max_new_tokens=24, k=3))
        online.after_request(stats)
    changed = {n for n, p in draft.model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert changed == set(draft.trainable) and online._history[0]["positions"] > 0


def test_spec_refusals(tiny_target) -> None:
    loaded = LoadedModel(spec="tiny", model=tiny_target, tokenizer=None)
    with pytest.raises(UserError, match="after 'hybrid:' give a head draft"):
        make_draft("hybrid:layerskip:2", loaded)
    draft = make_draft("hybrid:eagle:fresh", loaded)
    assert isinstance(draft, HybridDraft) and draft.name == "hybrid:eagle:fresh" and draft.head_k == 2
