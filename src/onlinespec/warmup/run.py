"""`run_warmup`: distil a draft head from the target on text available offline, then measure it
(`onlinespec warmup` is its command).

Phases (each resumable): the target's greedy answers to warm-up prompts -> teacher passes (features + top-K) over
answers and CPython text -> distillation within a time/step budget -> held-out agreement and a speculative
decoding check on held-out prompts. The head lands in --out/KIND as config.json + model.safetensors (load it with
`--draft KIND:DIR`); warmup.json beside it records the command, seed, data and results.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import torch

from onlinespec.errors import UserError
from onlinespec.models import DEFAULT_MODEL

DATA_SOURCES = ("answers", "stdlib", "pydoc")
# The default warm-up prompts: the first items of each stream's warm-up slice (paper protocol); `--streams` picks
# others, e.g. the slices of the domains a deployment will serve.
WARMUP_STREAMS = {"humaneval": 40, "spider": 40, "finance": 24}
DEFAULT_UNROLL = 2  # a fresh head's training passes on its own features (--unroll)
EVAL_PER_STREAM = 2  # the last warm-up prompts of each stream are held out for the final check
HELD_OUT_EVERY = 20  # every 20th sequence (answers first, then corpus) is held out for the agreement figure


@dataclass
class WarmupConfig:
    """A warm-up: which head, from which data, trained how long. Every field is an `onlinespec warmup` flag."""

    out: str | Path  # directory for the head, checkpoints and caches
    target: str = DEFAULT_MODEL
    kind: str = "eagle"  # head kind, one of drafts.HEAD_KIND_NAMES
    minutes: float = 20.0  # training time budget
    steps: int = 0  # stop after this many steps (0 = time budget only)
    sources: tuple[str, ...] = DATA_SOURCES
    answers: int = 48  # warm-up prompts the target answers
    answer_tokens: int = 128  # max tokens of each target answer
    corpus_tokens: int = 120_000  # tokens taken from stdlib + pydoc
    seq_len: int = 256  # corpus sequence length
    batch_tokens: int = 4096  # tokens per batch
    lr: float = 5e-4  # AdamW learning rate
    unroll: int | None = None  # EAGLE training passes on its own features; None: the --init head's own, else 2
    eagle_layout: str = "onlinespec"  # eagle1 = the exact EAGLE-1 head vLLM/SGLang run
    draft_vocab: int = 8192  # reduced draft vocabulary size, 0 = full
    top_k: int = 32  # target probabilities kept per position
    seed: int = 0
    resume: bool = False  # continue an interrupted warm-up in `out`
    prompts: str | None = None  # a JSONL file of more prompts for the target to answer (warmup/prompt_pool.py)
    answer_batch: int = 1  # >1: answers from batched `generate` (a GPU), warmup/corpus.py
    schedule: str = "constant"  # learning-rate schedule, warmup/distill.py SCHEDULES
    device: str = "cpu"  # where the target's passes and the training run ("cuda" on a GPU machine)
    init: str | None = None  # start from this saved head (its weights and draft vocabulary) instead of a fresh one
    teacher_dtype: str = "float32"  # the target copy that answers and labels (module docstring of run_warmup)
    streams: dict[str, int] = field(default_factory=lambda: dict(WARMUP_STREAMS))  # stream -> its first N prompts


def parse_warmup_streams(text: str) -> dict[str, int]:
    """`writingbench:40,math` -> {"writingbench": 40, "math": the whole warm-up slice}. Only a stream's warm-up
    slice may be taken (bench/prompts.py): its online slice is what `onlinespec bench` decodes, so a head warmed up
    on it would be measured on its own training prompts."""
    from onlinespec.bench.prompts import SOURCES, source_stream

    streams: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, count_text = item.partition(":")
        if name not in SOURCES:
            raise UserError(f"--streams: unknown stream '{name}': choose from {', '.join(SOURCES)}")
        available = len(source_stream(name).warmup)
        try:
            count = int(count_text) if count_text else available
        except ValueError:
            raise UserError(f"--streams: '{item}' needs a whole number of prompts after the colon") from None
        if not EVAL_PER_STREAM < count <= available:
            raise UserError(
                f"--streams: '{name}' has {available} warm-up prompts; take more than {EVAL_PER_STREAM} (the last "
                f"{EVAL_PER_STREAM} are held out for the decoding check) and at most {available}"
            )
        streams[name] = count
    if not streams:
        raise UserError("--streams needs at least one stream, e.g. humaneval:40,spider:40,finance:24")
    return streams


def warmup_prompts(streams: dict[str, int] | None = None) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts) from the warm-up slices of the prompt streams (bench/prompts.py): the
    first `count` prompts of each `streams` entry (default WARMUP_STREAMS), its last EVAL_PER_STREAM held out."""
    from onlinespec.bench.prompts import STREAMS

    per_stream, held = [], []
    for name, count in (streams or WARMUP_STREAMS).items():
        prompts = STREAMS[name]()[:count]
        per_stream.append(prompts[: count - EVAL_PER_STREAM])
        held += prompts[count - EVAL_PER_STREAM :]
    # round robin over the streams, so the first N training prompts cover every domain
    train = [p for group in zip_longest(*per_stream) for p in group if p is not None]
    return train, held


def _fingerprint(
    sequences: list[list[int]], top_k: int, feature_layers: tuple[int, ...] = (-1,), dtype: str = "float32"
) -> str:
    key = [top_k, sequences] if feature_layers == (-1,) else [top_k, list(feature_layers), sequences]
    key = key if dtype == "float32" else [dtype, *key]  # float32 caches keep the name they had
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    return digest[:12]


def run_warmup(cfg: WarmupConfig, command: str | None = None) -> dict:
    """Warm up the head `cfg.kind` for `cfg.target`; it lands in cfg.out/KIND with warmup.json (the returned record,
    which notes `command`, the command line that ran it).

    The head is built on, and trained in, a float32 copy of the target. `cfg.teacher_dtype` is the dtype of the
    target that answers the warm-up prompts, labels every position (features and top-K, warmup/teacher.py) and
    runs the decoding check: float32 (the default) is that same copy; bfloat16 (or auto) loads a second copy in
    it, with the weight layout `auto` picks (packed bf16 where oneDNN runs it). On a CPU with bf16 instructions that
    makes the answers and teacher passes of a 1.5B target several times faster, and the head learns the features
    it will read when it drafts for a bf16 target; the price is the second copy's memory.
    """
    from onlinespec.decoding.config import GenerationConfig
    from onlinespec.drafts import build_head, is_unrolled
    from onlinespec.drafts.head_store import load_into, read_head, save_head
    from onlinespec.drafts.heads import head_feature_layers, load_head
    from onlinespec.models import load_model
    from onlinespec.models.weight_layout import weight_layout
    from onlinespec.pipeline import Pipeline
    from onlinespec.warmup.corpus import chunked_token_sequences, generate_answers, pydoc_texts, stdlib_texts
    from onlinespec.warmup.distill import DistillConfig, agreement, choose_draft_vocab, distill
    from onlinespec.warmup.teacher import teacher_batches

    out = Path(cfg.out)
    # One --out can hold several kinds: they share the answers and teacher caches, each has its own checkpoint.
    checkpoint = out / f"checkpoint-{cfg.kind}"
    if checkpoint.exists() and not cfg.resume:
        raise UserError(
            f"'{out}' holds an earlier {cfg.kind} warm-up: pass --resume to continue it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    started = time.monotonic()

    device = _device(cfg.device)
    loaded = load_model(cfg.target, "float32")
    target, tokenizer = loaded.model.to(device), loaded.tokenizer
    teacher = loaded if cfg.teacher_dtype == "float32" else load_model(cfg.target, cfg.teacher_dtype, "auto")
    if teacher is not loaded and teacher.dtype == "float32":  # auto chose float32 here: one copy does it all
        teacher = loaded
    teacher.model.to(device)
    pipe = Pipeline(teacher, None)
    train_prompts, held_prompts = warmup_prompts(cfg.streams)
    if cfg.prompts:
        from onlinespec.bench.prompts import load_prompt_file

        train_prompts += [p.text for p in load_prompt_file(cfg.prompts)]
    sequences: list[list[int]] = []
    sources = list(cfg.sources)
    answer_prompts: list[str] = []
    if "answers" in sources:
        answer_prompts = train_prompts[: cfg.answers]
        sequences += generate_answers(pipe, answer_prompts, cfg.answer_tokens, out / "answers.jsonl", cfg.answer_batch)
    corpus = []
    if "stdlib" in sources:
        corpus.append(stdlib_texts())
    if "pydoc" in sources:
        corpus.append(pydoc_texts())
    for texts in corpus:
        sequences += chunked_token_sequences(texts, tokenizer, cfg.seq_len, cfg.corpus_tokens // len(corpus))
    held = sequences[::HELD_OUT_EVERY]
    train = [s for i, s in enumerate(sequences) if i % HELD_OUT_EVERY]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    layers = head_feature_layers(cfg.kind, target)  # EAGLE-3 reads inner layers too: its own teacher cache
    cache = out / f"teacher-{_fingerprint(sequences, cfg.top_k, layers, teacher.dtype)}"
    teacher_s = time.monotonic()
    labeller = teacher.model
    train_batches = teacher_batches(labeller, train, cfg.batch_tokens, cfg.top_k, pad, cache / "train", layers)
    held_batches = teacher_batches(labeller, held, cfg.batch_tokens, cfg.top_k, pad, cache / "held", layers)
    teacher_s = time.monotonic() - teacher_s

    vocab, coverage = None, 1.0
    if cfg.init:  # continue a trained head: its weights, layout and draft vocabulary
        head = load_head(cfg.init, target, cfg.kind).train()
        vocab = head.vocab.ids if head.vocab.reduced else None
    else:
        if cfg.draft_vocab:
            always = sorted(pipe.eos_ids)
            vocab, coverage = choose_draft_vocab(train_batches, cfg.draft_vocab, always)
        head = build_head(cfg.kind, target, vocab, **({"layout": cfg.eagle_layout} if cfg.kind == "eagle" else {}))
    head.to(device)
    if is_unrolled(head):  # a continued head keeps the depths it was trained on unless told otherwise
        head.unroll = cfg.unroll if cfg.unroll is not None else (head.unroll if cfg.init else DEFAULT_UNROLL)
    before = agreement(head, held_batches)

    def resume():
        if not (checkpoint / "trainer.pt").is_file():
            return None
        _, tensors = read_head(checkpoint / "head")
        load_into(head, tensors, str(checkpoint / "head"))
        print(f"onlinespec: resuming the warm-up from {checkpoint}", file=sys.stderr)
        return torch.load(checkpoint / "trainer.pt")

    distill_cfg = DistillConfig(
        minutes=cfg.minutes, max_steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, schedule=cfg.schedule, device=device
    )
    result = distill(head, train_batches, distill_cfg, checkpoint, lambda d: save_head(d, head, target), resume)
    after = agreement(head, held_batches)
    target.to("cpu")  # the decoding check runs our engine, which decodes on the CPU
    teacher.model.to("cpu")
    head.to("cpu")
    checked = head
    if teacher is not loaded:  # the head as a bf16 target will load it: saved, then read onto the teacher's copy
        save_head(out / cfg.kind, head, target)
        checked = load_head(out / cfg.kind, teacher.model, cfg.kind).eval()
    decoding = _decoding_check(teacher, checked, held_prompts, GenerationConfig(max_new_tokens=96, k=4))
    record = {
        "command": command,
        "target": cfg.target,
        "kind": cfg.kind,
        "seed": cfg.seed,
        "data": {
            "sources": sources,
            "warmup_prompts": {k: v - EVAL_PER_STREAM for k, v in cfg.streams.items()},
            "answered_prompts": len(answer_prompts) if "answers" in sources else 0,
            "prompt_file": _file_record(cfg.prompts) if cfg.prompts else None,
            "answer_tokens": cfg.answer_tokens,
            "sequences": len(train),
            "train_tokens": sum(b.tokens for b in train_batches),
            "held_out_tokens": sum(b.tokens for b in held_batches),
        },
        "init": _file_record(str(Path(cfg.init) / "model.safetensors")) | {"head": str(cfg.init)} if cfg.init else None,
        "draft_vocab": {
            "size": int(vocab.numel()) if vocab is not None else None,
            "top1_coverage": coverage if not cfg.init else None,  # an initial head brings its own vocabulary
        },
        "teacher_s": teacher_s,
        "teacher_dtype": teacher.dtype,  # answers, labels and the decoding check (the head trains in float32)
        "teacher_weight_layout": weight_layout(teacher.model),
        "device": _device_name(device),
        "train_minutes": cfg.minutes,
        "lr": cfg.lr,
        "schedule": cfg.schedule,
        "batch_tokens": cfg.batch_tokens,
        **result,
        # before training: an untrained head's agreement, or with --init the initial head's
        "held_out_top1_agreement": {"initial" if cfg.init else "untrained": before, "warmed_up": after},
        "held_out_decoding": decoding,
        "total_s": time.monotonic() - started,
    }
    save_head(out / cfg.kind, head, target, extra={"warmup": record})
    (out / cfg.kind / "warmup.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _device(name: str) -> str:
    """`name` checked: "cpu", or a CUDA device this machine has."""
    if name == "cpu":
        return name
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this machine has no CUDA GPU that torch can use; leave out --device")
        return name
    raise UserError(f"--device takes cpu or cuda (cuda:N), not '{name}'")


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"


def _file_record(path: str) -> dict:
    """Name, size and SHA-256 of an input file, so warmup.json says exactly which data made the head."""
    data = Path(path).read_bytes()
    return {"name": Path(path).name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _decoding_check(loaded, head, prompts: list[str], cfg) -> dict:
    """Greedy speculative decoding of held-out prompts with the head: the accept-rate figure users care about."""
    from onlinespec.decoding.metrics import RequestStats
    from onlinespec.drafts import head_kind_entry
    from onlinespec.pipeline import Pipeline

    draft = head_kind_entry(head.kind).draft_class(head, name=head.kind)
    pipe = Pipeline(loaded, draft)
    total = RequestStats.total(pipe.generate(prompt, cfg).stats for prompt in prompts)
    return {"prompts": len(prompts), "k": cfg.k, "alpha": total.alpha, "tau": total.tau}
