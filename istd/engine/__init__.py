"""Training, evaluation and prediction."""

from istd.engine.config import TrainConfig, load_config
from istd.engine.detections import Detection, find_detections
from istd.engine.predict import Prediction, Predictor
from istd.engine.tracking import Tracker, TrackerConfig

__all__ = [
    "Detection",
    "Prediction",
    "Predictor",
    "TrainConfig",
    "Tracker",
    "TrackerConfig",
    "find_detections",
    "load_config",
]
