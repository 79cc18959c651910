"""What the commands share besides flags."""

from __future__ import annotations

import os


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars before a command loads a model."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
