"""Robustness of searched networks (DSRNA, thesis ch. 1): the Jacobian regulariser, certified
margin bounds (IBP and CROWN-style linear relaxation) through the DARTS ops, and FGSM/PGD
attacks for evaluation. Engine-side: torch only."""

from .attacks import PixelSpace, accuracy, fgsm, pgd, robust_accuracy
from .bounds import BOUND_METHODS, certified_radius, margin_lower_bound
from .jacobian import JACOBIAN_NORMS, exact_jacobian_norm, jacobian_norm

__all__ = [
    "BOUND_METHODS",
    "JACOBIAN_NORMS",
    "PixelSpace",
    "accuracy",
    "certified_radius",
    "exact_jacobian_norm",
    "fgsm",
    "jacobian_norm",
    "margin_lower_bound",
    "pgd",
    "robust_accuracy",
]
