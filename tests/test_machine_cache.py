"""The machine-measurement cache (models/machine_cache.py): one file per key, safe with concurrent writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from onlinespec.models.machine_cache import read_measurement, write_measurement
from onlinespec.models.tiny import tiny_llama


def test_a_measurement_is_read_back_for_its_key_only(tmp_path) -> None:
    model = tiny_llama(layers=1)
    write_measurement(tmp_path, "verify_cost", model, {"curve": [1.0, 1.5]}, extra={"layout": "standard"})
    saved = read_measurement(tmp_path, "verify_cost", model, extra={"layout": "standard"})
    assert saved["curve"] == [1.0, 1.5] and saved["source"].startswith(str(tmp_path))
    assert read_measurement(tmp_path, "verify_cost", model, extra={"layout": "transposed"}) is None
    assert read_measurement(tmp_path, "weight_layout", model, extra={"layout": "standard"}) is None
    assert read_measurement(tmp_path, "verify_cost", tiny_llama(layers=2), extra={"layout": "standard"}) is None


def test_writers_of_the_same_measurement_at_once_never_clash(tmp_path) -> None:
    """Two servers (or test workers) measuring one model at the same time write the same file: every write must
    succeed and the file must always hold one whole record (a shared temporary name made one writer's rename fail
    with FileNotFoundError, or move another's half-written file into place)."""
    model = tiny_llama(layers=1)

    def write(i: int) -> None:
        write_measurement(tmp_path, "verify_cost", model, {"curve": [1.0, 1.0 + i / 1000], "pad": "x" * 20_000})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(400)))
    saved = read_measurement(tmp_path, "verify_cost", model)
    assert saved is not None and len(saved["pad"]) == 20_000
    left = list((tmp_path / "verify_cost").iterdir())
    assert len(left) == 1 and left[0].suffix == ".json"  # no temporary file left behind


def test_a_measurement_from_another_cpu_of_the_same_name_is_not_read(tmp_path, monkeypatch) -> None:
    """Cloud Xeons of different generations all call themselves "Intel(R) Xeon(R) Processor": the key holds the
    CPU's signature too (family/model/stepping, cache, cores, a digest of its feature flags)."""
    import os

    from onlinespec.models import machine_cache

    model = tiny_llama(layers=1)
    here = machine_cache.cpu_signature()
    assert f"{os.cpu_count()} cpus" in here and "flags " in here
    write_measurement(tmp_path, "verify_cost", model, {"curve": [1.0, 1.7]})
    monkeypatch.setattr(machine_cache, "cpu_signature", lambda: here.replace("flags ", "flags other-"))
    assert read_measurement(tmp_path, "verify_cost", model) is None
    monkeypatch.setattr(machine_cache, "cpu_signature", lambda: here)
    assert read_measurement(tmp_path, "verify_cost", model)["curve"] == [1.0, 1.7]
