"""Faithfulness metrics for saliency maps: pure, batched, jittable functions on device.

    average_drop, increase_in_confidence, confidence_change   (Chattopadhyay et al.: E = x * map)
    deletion_curve, insertion_curve, auc                       (Petsiuk et al., RISE)
    road, road_combined, noisy_linear_impute                   (Rong et al., ROAD; MoRF / LeRF curves)
    complexity, coherency, arcc                                (pytorch-grad-cam's ARCC)
    all_metrics                                                every metric of a batch in one call

Every metric takes ``(model, x, maps, targets=None, ...)`` with x the model input (N, H, W, C) and
maps (N, H, W) as jaxcam's methods return them, and returns per-image values (N, ...): average them
over a data set yourself (or use ``scripts/evaluate.py``).
"""
from jaxcam.metrics.arcc import arcc, coherency, complexity, pearson
from jaxcam.metrics.confidence import average_drop, confidence_change, explanation_scores, increase_in_confidence
from jaxcam.metrics.curves import BASELINES, auc, deletion_curve, gaussian_blur, insertion_curve
from jaxcam.metrics.road_impute import noisy_linear_impute, road, road_combined
from jaxcam.metrics.suite import all_metrics

__all__ = [
    "arcc",
    "coherency",
    "complexity",
    "pearson",
    "BASELINES",
    "all_metrics",
    "auc",
    "average_drop",
    "confidence_change",
    "deletion_curve",
    "explanation_scores",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion_curve",
    "noisy_linear_impute",
    "road",
    "road_combined",
]
