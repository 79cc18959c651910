"""Export of trained drafts to other inference engines: an EAGLE head (`export_eagle`) or an EAGLE-3 head
(`export_eagle3`) in the layout vLLM or SGLang load.

from onlinespec.export import export_eagle

export_eagle("heads/eagle", "exported", "smollm2-135m", "sglang")
"""

from __future__ import annotations

from onlinespec.export.eagle import FORMATS, export_eagle
from onlinespec.export.eagle3 import export_eagle3

__all__ = ["FORMATS", "export_eagle", "export_eagle3"]
