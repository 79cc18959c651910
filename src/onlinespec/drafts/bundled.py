"""The draft heads bundled with onlinespec: `onlinespec/heads/<target>-<kind>/` (config.json, model.safetensors
and the warmup.json that records how each was made), used by the spec `KIND` without a directory."""

from __future__ import annotations

from pathlib import Path

from onlinespec.errors import UserError

BUNDLED = Path(__file__).resolve().parent.parent / "heads"


def has_bundled_head(kind: str, target_spec: str) -> bool:
    return (BUNDLED / f"{target_spec}-{kind}" / "config.json").is_file()


def bundled_head_dir(kind: str, target_spec: str) -> Path:
    directory = BUNDLED / f"{target_spec}-{kind}"
    if not (directory / "config.json").is_file():
        raise UserError(
            f"no bundled {kind} head for target '{target_spec}': warm one up with "
            f"`onlinespec warmup --target {target_spec} --draft {kind} --out DIR` and pass --draft {kind}:DIR "
            f"(or --draft {kind}:fresh for an untrained head)"
        )
    return directory
