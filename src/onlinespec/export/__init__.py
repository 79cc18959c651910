"""Export of trained drafts to other inference engines. `eagle`: an EAGLE head in the layout vLLM or SGLang load.

from onlinespec.export import export_eagle

export_eagle("heads/eagle", "exported", "smollm2-135m", "sglang")
"""

from __future__ import annotations

from onlinespec.export.eagle import FORMATS, export_eagle

__all__ = ["FORMATS", "export_eagle"]
