"""Robustness of classifiers to acquisition-like perturbations of the test images.

``severities``: the perturbations' names, default severities and units (torch-free);
``perturbations``: TorchIO perturbations at a given severity; ``sweep``: a model's
test metrics over a sweep of severities, the breakdown severities, and the rule's
stage; ``figures``: metric-versus-severity curves and example images.
"""

from typing import Any

from casebook.analysis.robustness.severities import DEFAULT_SEVERITIES, IDENTITY, PERTURBATIONS, UNITS

__all__ = ["DEFAULT_SEVERITIES", "IDENTITY", "PERTURBATIONS", "UNITS", "perturb"]


def __getattr__(name: str) -> Any:
    # ``perturb`` needs torch and TorchIO (seconds to import): loaded on first use, so
    # that importing a light submodule (the summary figure) does not pay for them
    if name == "perturb":
        from casebook.analysis.robustness.perturbations import perturb

        return perturb
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
