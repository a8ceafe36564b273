"""vidcls: video classification with linear and quadratic video transformers.

The library API that the command line is built on:

    >>> import vidcls
    >>> model = vidcls.load_model("demo-motion")
    >>> [p.top_k[0]["label"] for p in vidcls.predict(["clip.mp4"], model)]
"""

__version__ = "0.1.0"

from .errors import UsageError, VidclsError  # noqa: E402
from .inference import Prediction, predict, predict_video  # noqa: E402
from .zoo import LoadedModel, ModelCard, load_model, save_model_dir  # noqa: E402

__all__ = ["LoadedModel", "ModelCard", "Prediction", "UsageError", "VidclsError", "__version__",
           "load_model", "predict", "predict_video", "save_model_dir"]
