"""The degradations a restoration study can learn to undo (a contrast translation counts
as one: the source sequence is a degraded view of the target), and how each is named in
its tables and figures: the method that is the degraded input itself, the reference, the
level (a dose, a slice-thickness factor, a source channel, a hole size) and which level
is the hardest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Degradation:
    name: str
    #: the method whose output is the degraded input itself (the baseline every model must beat)
    input_label: str
    reference_label: str
    level_name: str
    level_axis: str
    describe: Callable[[float], str]
    #: the hardest level among the study's (shown in the panels)
    hardest: Callable[[list[float]], float]
    units: str
    #: levels on a logarithmic axis (doses, factors), or as categories (a source channel)
    log_scale: bool = True


DEGRADATIONS: dict[str, Degradation] = {
    "dose": Degradation(
        name="dose",
        input_label="low-dose input",
        reference_label="full-dose reference",
        level_name="dose",
        level_axis="dose (fraction of full dose)",
        describe=lambda level: f"dose {level:g} of full",
        hardest=min,
        units="HU",
    ),
    "thick_slices": Degradation(
        name="thick_slices",
        input_label="B-spline interpolation",
        reference_label="thin-slice reference",
        level_name="slice factor",
        level_axis="slice thickness factor (thick / thin)",
        describe=lambda level: f"slices {level:g}x thicker",
        hardest=max,
        units="intensity",
    ),
    "contrast": Degradation(
        name="contrast",
        input_label="histogram-matched source",
        reference_label="target sequence",
        level_name="source channel",
        level_axis="source channel",
        describe=lambda level: f"from channel {level:g}",
        hardest=min,
        units="intensity",
        log_scale=False,
    ),
    "missing_region": Degradation(
        name="missing_region",
        input_label="biharmonic inpainting",
        reference_label="intact slice",
        level_name="hole side",
        level_axis="side of the missing square (pixels)",
        describe=lambda level: f"a {level:g}-pixel square missing",
        hardest=max,
        units="intensity",
        log_scale=False,
    ),
}

#: every name the degraded input goes by: no model may take one
INPUT_LABELS = frozenset(d.input_label for d in DEGRADATIONS.values())


def degradation(settings: dict) -> Degradation:
    """The degradation of a case study's ``restoration`` settings (dose by default)."""
    name = settings.get("degradation", "dose")
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; the degradations are {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[name]
