"""`onlinespec warmup` end to end on a tiny model: an interrupted-then-resumed warm-up equals an uninterrupted one,
and the saved head loads as a draft."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_model_dir
from safetensors.torch import load_file

from onlinespec.cli import main

WORDS = ["def", "return", "the", "a", "import", "class", "self", "if", "for", "in", "x", "=", "(", ")", ":", "not"]


def warmup(model_dir, out, steps: int, *extra: str) -> int:
    return main(
        [
            "warmup",
            "--target",
            str(model_dir),
            "--out",
            str(out),
            "--data",
            "stdlib",
            "--corpus-tokens",
            "3000",
            "--seq-len",
            "32",
            "--batch-tokens",
            "128",
            "--draft-vocab",
            "12",
            "--steps",
            str(steps),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("warm") / "model"
    save_tiny_model_dir(path, WORDS)
    return path


def test_resumed_warmup_equals_an_uninterrupted_one_and_loads(model_dir, tmp_path) -> None:
    assert warmup(model_dir, tmp_path / "straight", 8) == 0
    assert warmup(model_dir, tmp_path / "resumed", 4) == 0
    assert warmup(model_dir, tmp_path / "resumed", 8) == 2  # an earlier warm-up there: refused without --resume
    assert warmup(model_dir, tmp_path / "resumed", 8, "--resume") == 0
    straight = load_file(str(tmp_path / "straight" / "eagle" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "eagle" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)

    from onlinespec.drafts import make_draft
    from onlinespec.models import load_model

    draft = make_draft(f"eagle:{tmp_path / 'straight' / 'eagle'}", load_model(str(model_dir)))
    assert draft.model.vocab.size == 12
