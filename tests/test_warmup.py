"""`onlinespec warmup` end to end on a tiny model: an interrupted-then-resumed warm-up equals an uninterrupted one,
and the saved head loads as a draft."""

from __future__ import annotations

import json

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

    # the default --unroll 2 reached the head (a runtime-protocol check missed it on Python 3.12)
    config = json.loads((tmp_path / "straight" / "eagle" / "config.json").read_text())
    assert config["unroll"] == 2
    assert (
        len(
            json.loads((tmp_path / "straight" / "eagle" / "warmup.json").read_text())["held_out_top1_agreement"][
                "warmed_up"
            ]
        )
        == 2
    )

    from onlinespec.drafts import make_draft
    from onlinespec.models import load_model

    draft = make_draft(f"eagle:{tmp_path / 'straight' / 'eagle'}", load_model(str(model_dir)))
    assert draft.model.vocab.size == 12


def test_batched_answers_equal_our_greedy_answers(model_dir, tmp_path) -> None:
    """`--answer-batch` (left-padded batches through transformers' generate, the GPU path) gives the same
    prompt + answer ids as our own greedy decoding, prompt by prompt, on prompts of different lengths."""
    from onlinespec.models import load_model
    from onlinespec.pipeline import Pipeline
    from onlinespec.warmup.corpus import generate_answers

    pipe = Pipeline(load_model(str(model_dir)), None)
    prompts = ["def x", "return the a import class self if for in x", "class self", "not x = ( ) :", "a"]
    one = generate_answers(pipe, prompts, 12, tmp_path / "one.jsonl", batch=1)
    batched = generate_answers(pipe, prompts, 12, tmp_path / "batched.jsonl", batch=3)
    assert batched == one
    assert any(len(ids) > len(pipe.encode(p)) for p, ids in zip(prompts, one, strict=True))


def test_cached_answers_are_reused_only_for_the_same_answer_budget(model_dir, tmp_path) -> None:
    """The answers cache is keyed by prompt and budget: a second call with the same budget generates nothing (its
    rows are what it returns even when the file holds other text), one with another budget answers again."""
    from onlinespec.models import load_model
    from onlinespec.pipeline import Pipeline
    from onlinespec.warmup.corpus import generate_answers

    pipe = Pipeline(load_model(str(model_dir)), None)
    prompts = ["def x", "class self"]
    cache = tmp_path / "answers.jsonl"
    short = generate_answers(pipe, prompts, 3, cache)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["max_new_tokens"] for r in rows] == [3, 3]
    marked = [{**r, "ids": [*r["ids"], 0]} for r in rows]  # a cached row is taken as it is, not regenerated
    cache.write_text("".join(json.dumps(r) + "\n" for r in marked))
    assert generate_answers(pipe, prompts, 3, cache) == [r["ids"] for r in marked]
    longer = generate_answers(pipe, prompts, 8, cache)
    assert longer != [r["ids"] for r in marked]
    assert all(a == b[: len(a)] for a, b in zip(short, longer, strict=True))  # greedy: the short answer is a prefix
    assert len(cache.read_text().splitlines()) == 4


def test_cosine_schedule_ramps_then_decays_to_zero() -> None:
    from onlinespec.warmup.distill import lr_factor

    assert lr_factor("constant", 0.7) == 1.0
    assert lr_factor("cosine", 0.0) == 0.01 and lr_factor("cosine", 0.01) == 0.5
    assert lr_factor("cosine", 0.02) == 1.0
    assert abs(lr_factor("cosine", 0.51)) < 0.51 and lr_factor("cosine", 1.0) < 1e-12


def test_heads_that_unroll_are_told_apart_from_those_that_do_not() -> None:
    from onlinespec.drafts import build_head, is_unrolled
    from onlinespec.models.tiny import tiny_llama

    target = tiny_llama()
    assert is_unrolled(build_head("eagle", target, None)) and is_unrolled(build_head("eagle3", target, None))
    assert not is_unrolled(build_head("medusa", target, None)) and not is_unrolled(build_head("hydra", target, None))


def test_warmup_can_continue_a_saved_head_with_its_vocabulary(model_dir, tmp_path) -> None:
    """--init starts from a saved head: its draft vocabulary is kept (--draft-vocab does not re-choose it), its
    weights are the starting point, and the new --unroll is the one saved."""
    assert warmup(model_dir, tmp_path / "first", 3) == 0
    assert (
        warmup(model_dir, tmp_path / "again", 0, "--init", str(tmp_path / "first" / "eagle"), "--minutes", "1e-6") == 0
    )
    first = load_file(str(tmp_path / "first" / "eagle" / "model.safetensors"))
    again = load_file(str(tmp_path / "again" / "eagle" / "model.safetensors"))
    assert first.keys() == again.keys()
    for name in first:  # no step ran: the head is the one it started from
        torch.testing.assert_close(again[name], first[name], rtol=0, atol=0)
    assert warmup(model_dir, tmp_path / "more", 2, "--init", str(tmp_path / "first" / "eagle"), "--unroll", "3") == 0
    more = load_file(str(tmp_path / "more" / "eagle" / "model.safetensors"))
    torch.testing.assert_close(more["draft_vocab_ids"], first["draft_vocab_ids"], rtol=0, atol=0)
    assert any(not torch.equal(more[n], first[n]) for n in first if n != "draft_vocab_ids")
    assert json.loads((tmp_path / "more" / "eagle" / "config.json").read_text())["unroll"] == 3
    # without --unroll a continued head keeps its own depth (3 here), not the fresh-head default of 2
    assert warmup(model_dir, tmp_path / "kept", 1, "--init", str(tmp_path / "more" / "eagle")) == 0
    assert json.loads((tmp_path / "kept" / "eagle" / "config.json").read_text())["unroll"] == 3
    assert warmup(model_dir, tmp_path / "bad", 1, "--init", str(tmp_path / "missing")) == 2


def test_a_device_this_machine_lacks_is_a_clear_error(model_dir, tmp_path, capsys) -> None:
    if not torch.cuda.is_available():
        assert warmup(model_dir, tmp_path / "gpu", 1, "--device", "cuda") == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert warmup(model_dir, tmp_path / "tpu", 1, "--device", "tpu") == 2
    assert "--device takes cpu or cuda" in capsys.readouterr().err


def test_a_bf16_teacher_labels_in_bf16_while_the_head_trains_in_float32(model_dir, tmp_path) -> None:
    """--teacher-dtype bfloat16: the teacher cache holds what a bf16 copy of the target computes (its own cache
    folder, apart from float32's), the saved head is float32 and loads onto a bf16 target as a draft."""
    from onlinespec.drafts import make_draft
    from onlinespec.models import load_model
    from onlinespec.warmup.teacher import teacher_pass

    assert warmup(model_dir, tmp_path / "f32", 2) == 0
    assert warmup(model_dir, tmp_path / "f32", 2, "--teacher-dtype", "auto", "--resume") == 0
    record = json.loads((tmp_path / "f32" / "eagle" / "warmup.json").read_text())
    if record["teacher_dtype"] == "float32":  # auto chose float32 on this machine: the same copy, the same cache
        assert len(list((tmp_path / "f32").glob("teacher-*"))) == 1
    assert warmup(model_dir, tmp_path / "f32", 2, "--teacher-dtype", "bfloat16", "--resume") == 0
    teachers = sorted((tmp_path / "f32").glob("teacher-*"))
    assert len(teachers) == 2  # one cache per teacher dtype
    record = json.loads((tmp_path / "f32" / "eagle" / "warmup.json").read_text())
    assert record["teacher_dtype"] == "bfloat16" and record["held_out_decoding"]["prompts"] > 0
    saved = load_file(str(tmp_path / "f32" / "eagle" / "model.safetensors"))
    assert all(t.dtype in (torch.float32, torch.int64) for t in saved.values())
    bf16 = load_model(str(model_dir), "bfloat16", record["teacher_weight_layout"])  # the layout auto chose then
    f32 = load_model(str(model_dir), "float32")
    labelled = {t.name: [_labels_of(t / "held", m.model, teacher_pass) for m in (f32, bf16)] for t in teachers}
    assert sorted(labelled.values()) == [[False, True], [True, False]]  # one cache per dtype, each its own labels
    draft = make_draft(f"eagle:{tmp_path / 'f32' / 'eagle'}", bf16)
    assert next(draft.model.parameters()).dtype == torch.bfloat16


def _labels_of(held_dir, model, teacher_pass) -> bool:
    """Whether the first held-out batch in `held_dir` holds the features `model` computes for its sequences."""
    batch = torch.load(held_dir / "batch-00000.pt")
    seqs = [row[:n].tolist() for row, n in zip(batch["ids"], batch["lengths"], strict=True)]
    again = teacher_pass(model, seqs, batch["top_ids"].shape[-1], 0)
    assert again.features.dtype == batch["features"].dtype == torch.float16
    return all(
        torch.equal(again.features[i, :n], batch["features"][i, :n]) for i, n in enumerate(batch["lengths"].tolist())
    )


def test_streams_choose_the_warmup_prompts_from_warmup_slices_only(tmp_path, capsys) -> None:
    """--streams: the first N prompts of each named stream's warm-up slice, taken in turn, the last 2 of each held
    out; a stream's online slice (what bench decodes) can never be asked for."""
    from onlinespec.bench.prompts import source_stream
    from onlinespec.warmup.run import parse_warmup_streams, warmup_prompts

    streams = parse_warmup_streams("writingbench:5,math")
    math_slice = [p.text for p in source_stream("math").warmup]
    writing_slice = [p.text for p in source_stream("writingbench").warmup]
    assert streams == {"writingbench": 5, "math": len(math_slice)}
    train, held = warmup_prompts(streams)
    in_turn = [writing_slice[0], math_slice[0], writing_slice[1], math_slice[1], writing_slice[2], math_slice[2]]
    assert train[:6] == in_turn
    assert len(train) == 3 + len(math_slice) - 2
    assert held == writing_slice[3:5] + math_slice[-2:]
    online = {p.text for name in streams for p in source_stream(name).online}
    assert not online & set(train + held)
    assert warmup_prompts()[0][:3] == warmup_prompts(parse_warmup_streams("humaneval:40,spider:40,finance:24"))[0][:3]
    for bad, message in [
        ("poetry", "unknown stream 'poetry'"),
        ("math:many", "needs a whole number"),
        (f"math:{len(math_slice) + 1}", f"'math' has {len(math_slice)} warm-up prompts"),
        ("math:2", "take more than 2"),
        (" , ", "at least one stream"),
    ]:
        assert main(["warmup", "--out", str(tmp_path / "out"), "--streams", bad]) == 2, bad
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()  # a flag mistake is refused before the output folder is taken
