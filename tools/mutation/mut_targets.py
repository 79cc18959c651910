"""What to mutate and which tests may kill it: named groups of source files, each with its pool of test files.

A mutant runs only the pool's tests that executed one of its lines in the unmutated code (the line map, see
mut_linemap.py); a mutant of import-time code (a constant, a default) runs the pool's tests that executed any line
of its file. Groups marked `by_lines=False` run their whole pool instead: their code runs in a server subprocess,
where the line map cannot see it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    name: str
    sources: tuple[str, ...]  # globs relative to the repository root
    tests: tuple[str, ...]  # test files (the pool)
    by_lines: bool = True


_ENGINE_TESTS = (
    "tests/test_decoding_stats.py",
    "tests/test_sampling_rules.py",
    "tests/test_tree_config.py",
    "tests/test_engine_records.py",
    "tests/test_stopping.py",
    "tests/test_request_stats.py",
    "tests/test_properties.py",
    "tests/test_text_stream.py",
    "tests/test_feedback.py",
    "tests/test_kv_rollback.py",
    "tests/test_greedy_equality.py",
    "tests/test_sampling_exact.py",
    "tests/test_eagle_alignment.py",
    "tests/test_eagle.py",
    "tests/test_medusa_hydra.py",
    "tests/test_online.py",
    "tests/test_steps_per_round.py",
    "tests/test_verify_cost.py",
)
_LEARNER_TESTS = (
    "tests/test_learner_settings.py",
    "tests/test_learner_guards.py",
    "tests/test_learners.py",
    "tests/test_adaptive_learners.py",
    "tests/test_steps_per_round.py",
    "tests/test_online.py",
    "tests/test_state_faults.py",
    "tests/test_eagle.py",
    "tests/test_medusa_hydra.py",
)

GROUPS: dict[str, Group] = {
    g.name: g
    for g in (
        Group("decoding", ("src/onlinespec/decoding/*.py",), _ENGINE_TESTS),
        Group("learners", ("src/onlinespec/online/learners/*.py",), _LEARNER_TESTS),
        Group(
            "online",
            ("src/onlinespec/online/*.py",),
            (
                "tests/test_losses.py",
                "tests/test_properties.py",
                "tests/test_state_store.py",
                "tests/test_state_faults.py",
                "tests/test_draft_registry.py",
                "tests/test_adaptive_learners.py",
                "tests/test_online.py",
                "tests/test_steps_per_round.py",
                "tests/test_eagle.py",
                "tests/test_medusa_hydra.py",
            ),
        ),
        Group(
            "drafts",
            (
                "src/onlinespec/drafts/chain.py",
                "src/onlinespec/drafts/causal_lm.py",
                "src/onlinespec/drafts/eagle.py",
                "src/onlinespec/drafts/head_draft.py",
                "src/onlinespec/drafts/tree_builder.py",
            ),
            (
                "tests/test_models.py",
                "tests/test_draft_registry.py",
                "tests/test_kv_rollback.py",
                "tests/test_greedy_equality.py",
                "tests/test_eagle_alignment.py",
                "tests/test_eagle.py",
                "tests/test_medusa_hydra.py",
                "tests/test_steps_per_round.py",
                "tests/test_online.py",
            ),
        ),
        Group(
            "bench-results",
            ("src/onlinespec/bench/results.py",),
            (
                "tests/test_bench_arithmetic.py",
                "tests/test_bench_report.py",
                "tests/test_bench.py",
                "tests/test_bench_methods.py",
            ),
        ),
        Group(
            "serve",
            (
                "src/onlinespec/serve/schemas.py",
                "src/onlinespec/serve/responses.py",
                "src/onlinespec/serve/tokens.py",
                "src/onlinespec/serve/worker.py",
                "src/onlinespec/text_stream.py",
            ),
            (
                "tests/test_text_stream.py",
                "tests/test_serve_fuzz.py",
                "tests/test_serve_admission.py",
                "tests/test_serve_metrics.py",
                "tests/test_serve_stop.py",
                "tests/test_serve_finish.py",
            ),
            by_lines=False,
        ),
    )
}
