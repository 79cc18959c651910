"""onlinespec: lossless speculative decoding whose draft keeps learning online from verification feedback."""

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.feedback import FeedbackRecord
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.drafts import make_draft
from onlinespec.errors import UserError
from onlinespec.models import load_model
from onlinespec.pipeline import GenerationResult, Pipeline

__version__ = "0.1.0"
__all__ = [
    "FeedbackRecord",
    "GenerationConfig",
    "GenerationResult",
    "Pipeline",
    "RequestStats",
    "SamplingConfig",
    "SpeculativeEngine",
    "UserError",
    "load_model",
    "make_draft",
]
