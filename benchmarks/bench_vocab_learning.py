"""Can online learning teach a head the tokens its reduced vocabulary lacks? (issue 11.4)

`onlinespec bench`, unchanged, except that the head drafts of the methods named in --full-vocab decode and learn
with the target's full vocabulary (the upper bound of growing the reduced one online) instead of the head's own:

    A=@batch_requests=2@epochs=2@replay_positions=160@prompt_positions=256
    OMP_NUM_THREADS=2 python benchmarks/bench_vocab_learning.py --full-vocab "static@top_k=64,ogd-adam$A@top_k=64" \
      bench --draft eagle --preset adapt --stream summaries --verify-cost off --out runs/vocab-learn-summ \
      --methods "ar,static,static@top_k=64,ogd-adam$A,ogd-adam$A@top_k=64"

(`@top_k=64` is the default: it only gives a method a second name, so one run interleaves both vocabularies.)
The head's logits are the target's frozen LM-head rows applied to its output (drafts/head_parts.py DraftVocab), so
the full vocabulary needs no new weights; the OOV mask then drops nothing. The vocabulary is switched when the
method's draft is built, before its learner copies the head.
"""

from __future__ import annotations

import argparse
import sys

import onlinespec.bench.runner as runner
from onlinespec.cli import main as onlinespec_main
from onlinespec.drafts.head_parts import DraftVocab


def with_full_vocab(methods: set[str]) -> None:
    """Patch the bench runner: drafts built for `methods` get the target's full vocabulary."""
    building = {"method": None}
    build_pipeline, make_draft = runner.BenchRunner._pipeline, runner.make_draft

    def pipeline(self, method, *args):
        building["method"] = method
        return build_pipeline(self, method, *args)

    def draft(spec, target, dtype):
        made = make_draft(spec, target, dtype)
        if building["method"] in methods:
            if not hasattr(made, "model") or not hasattr(made.model, "vocab"):
                sys.exit(f"--full-vocab: the draft of '{building['method']}' is not a head draft")
            made.model.vocab = DraftVocab(target.model.get_output_embeddings(), None)
            print(f"{building['method']}: full vocabulary ({made.model.vocab.size})", file=sys.stderr)
        return made

    runner.BenchRunner._pipeline, runner.make_draft = pipeline, draft


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-vocab", required=True, help="comma-separated methods whose head uses every token")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="an `onlinespec bench ...` command line")
    args = parser.parse_args()
    if not args.command or args.command[0] != "bench":
        parser.error("give an `onlinespec bench` command after the options, starting with `bench`")
    with_full_vocab(set(args.full_vocab.split(",")))
    return onlinespec_main(args.command)


if __name__ == "__main__":
    sys.exit(main())
