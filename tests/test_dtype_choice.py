"""`--dtype auto`: the CPU-flag check, the measuring rule, the cache, the override, and what load_model does."""

from __future__ import annotations

import pytest
import torch

from onlinespec.errors import UserError
from onlinespec.models import load_model
from onlinespec.models.dtype_choice import (
    AUTO_DTYPE_ENV,
    BFLOAT16,
    FLOAT32,
    MEASURED_SIZES,
    MIN_GAIN,
    auto_dtype,
    faster_dtype,
    has_bf16_instructions,
    measure_dtypes,
)
from onlinespec.models.machine_cache import read_measurement

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd {extra} sve\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (X86.format(extra="avx512_bf16"), True),
        (X86.format(extra="amx_bf16 amx_tile"), True),
        (X86.format(extra="avx512_vnni"), False),  # bf16 emulated: never measured
        (ARM.format(extra="bf16"), True),
        (ARM.format(extra="i8mm"), False),
        ("", False),
    ],
)
def test_bf16_instructions_are_read_from_the_cpu_flags(cpuinfo: str, expected: bool) -> None:
    assert has_bf16_instructions(cpuinfo) is expected


def test_bf16_is_chosen_only_with_a_clear_gain() -> None:
    fp32 = [40.0, 80.0, 60.0]  # 180 ms in sum
    assert faster_dtype({FLOAT32: fp32, BFLOAT16: [20.0, 22.0, 25.0]}) == BFLOAT16
    just_enough = [x * (1 - MIN_GAIN) for x in fp32]
    assert faster_dtype({FLOAT32: fp32, BFLOAT16: just_enough}) == BFLOAT16
    assert faster_dtype({FLOAT32: fp32, BFLOAT16: [x * 0.95 for x in fp32]}) == FLOAT32  # a near-tie: exact dtype
    assert faster_dtype({FLOAT32: fp32, BFLOAT16: [80.0, 81.0, 82.0]}) == FLOAT32


def test_measuring_times_both_dtypes_and_leaves_the_model_alone(tiny_target) -> None:
    before = {name: p.clone() for name, p in tiny_target.named_parameters()}
    times = measure_dtypes(tiny_target, rounds=1)
    assert set(times) == {FLOAT32, BFLOAT16}
    assert all(len(ms) == len(MEASURED_SIZES) and all(t > 0 for t in ms) for ms in times.values())
    for name, p in tiny_target.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name])


def test_the_environment_pins_auto_without_measuring(tiny_target, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(AUTO_DTYPE_ENV, BFLOAT16)
    assert auto_dtype(tiny_target, tmp_path) == (BFLOAT16, {"reason": f"${AUTO_DTYPE_ENV}"})
    assert not any(tmp_path.iterdir())  # nothing measured, nothing cached
    monkeypatch.setenv(AUTO_DTYPE_ENV, "float8")
    with pytest.raises(UserError, match=AUTO_DTYPE_ENV):
        auto_dtype(tiny_target, tmp_path)


def test_auto_measures_once_and_reads_the_cache_after(tiny_target, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(AUTO_DTYPE_ENV)
    first, how = auto_dtype(tiny_target, tmp_path)
    assert first in (FLOAT32, BFLOAT16)
    if not has_bf16_instructions():  # this machine cannot run bf16 fast: decided without measuring
        assert first == FLOAT32 and "no bf16 instructions" in how["reason"]
        return
    saved = read_measurement(tmp_path, "dtype", tiny_target)
    assert saved is not None and saved["dtype"] == first == faster_dtype(saved["ms"])
    assert auto_dtype(tiny_target, tmp_path) == (first, how)  # read back, not measured again


def test_load_model_resolves_auto_and_names_the_dtype(tmp_path, monkeypatch) -> None:
    from onlinespec.models.tiny import save_tiny_model_dir

    save_tiny_model_dir(tmp_path / "m", ["a", "b", "c", "d"])
    monkeypatch.setenv(AUTO_DTYPE_ENV, BFLOAT16)
    loaded = load_model(str(tmp_path / "m"), "auto")
    assert loaded.dtype == BFLOAT16 and loaded.dtype_reason == f"${AUTO_DTYPE_ENV}"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    exact = load_model(str(tmp_path / "m"), "float32")
    assert exact.dtype == FLOAT32 and exact.dtype_reason == ""
    with pytest.raises(UserError, match="auto"):  # the error lists every choice, auto included
        load_model(str(tmp_path / "m"), "float8")
