"""The offline warm-up of a draft head (`onlinespec warmup`): `run` (the phases, `run_warmup(WarmupConfig)`),
`corpus` (answers and CPython text), `teacher` (the target's features and top-K), `distill` (training, agreement).

    from onlinespec.warmup.run import WarmupConfig, run_warmup

    record = run_warmup(WarmupConfig(out="warm", kind="eagle", minutes=5))   # the head lands in warm/eagle
"""
