"""Rule prepare_detection: every volume resampled, windowed and padded, its boxes as voxel targets."""

from casebook.scripting import logged
from casebook.tasks.detection.volumes import prepare_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    prepare_stage(sm.input.data, sm.params.detection, dict(sm.output.items()), dict(sm.wildcards.items()))
