"""Log-probabilities of a step under the draft, and the two online objectives on preference pairs.

DPO (Rafailov et al. 2023), as the paper's Online-LR uses it, with the reference = the current draft:
    loss = -log sigmoid(beta [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])
log-probabilities summed over the step's tokens in the draft's own tokenizer. Online SFT, the baseline, is the
mean token negative log-likelihood of the chosen (target's) step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def step_logprob(model, context_ids: list[int], step_ids: list[int]) -> torch.Tensor:
    """Sum of log p(step token | context, earlier step tokens) under `model`; a scalar with the graph when
    gradients are enabled. The step must have at least one token."""
    if not step_ids:
        raise ValueError("a step with no tokens has no log-probability")
    ids = torch.tensor([context_ids + step_ids], dtype=torch.long)
    logits = model(input_ids=ids).logits[0, len(context_ids) - 1 : -1].float()  # [S, V]: predicts each step token
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(step_ids)[:, None]).sum()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """-log sigmoid(beta [(pi_w - ref_w) - (pi_l - ref_l)]), averaged over pairs. All inputs: [P] summed log-probs."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def sft_loss(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Mean token NLL of the chosen steps: -(sum over pairs of log pi(y_w|x)) / (their total token count)."""
    return -policy_chosen.sum() / chosen_tokens.sum()
