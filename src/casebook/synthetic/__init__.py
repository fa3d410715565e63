"""Seeded synthetic datasets: the pipeline's embedded default data.

Each generator yields :class:`casebook.layout.Record` objects, deterministic in its
arguments. The classification generators (``cxr``, ``nodule_ct``) have a patient
structure (several similar images per patient, one label per patient) and lesion masks;
their difficulty knobs are tuned so that the pipeline's small DenseNet reaches a test AUC
of roughly 0.90-0.98 (see ``benchmarks/tune_synthetic.py``). The segmentation generators
(``brain_mri``: four MRI sequences with a BraTS-style tumour label map; ``abdomen_ct``:
HU volumes with liver, kidneys, spleen and lesions) give one volume per subject with a
voxel label map and a brain or body mask as region of interest. ``cardiac_cine`` gives a
beating left ventricle, one record per frame with its label map, for motion tracking.
``chest_ct`` gives thorax volumes with nodules planted in the lungs and their boxes, and
``limb_xray`` radiographs of long bones with fractures and their boxes, and
``mammogram`` breasts with masses and calcification clusters (boxes, malignancy as the
image label), for detection.
"""

from __future__ import annotations

from typing import Callable, Iterator

from casebook.layout import Record
from casebook.synthetic import abdomen_ct, brain_mri, cardiac_cine, chest_ct, limb_xray, mammogram
from casebook.synthetic.abdomen_ct import CLASS_NAMES as ABDOMEN_CT_CLASS_NAMES
from casebook.synthetic.abdomen_ct import generate_abdomen_ct
from casebook.synthetic.brain_mri import CLASS_NAMES as BRAIN_MRI_CLASS_NAMES
from casebook.synthetic.brain_mri import generate_brain_mri
from casebook.synthetic.cardiac_cine import generate_cardiac_cine
from casebook.synthetic.cxr import CLASS_NAMES as CXR_CLASS_NAMES
from casebook.synthetic.cxr import generate_cxr
from casebook.synthetic.nodule_ct import CLASS_NAMES as NODULE_CT_CLASS_NAMES
from casebook.synthetic.nodule_ct import generate_nodule_ct

#: Generator name -> function; the name is what configs refer to.
GENERATORS: dict[str, Callable[..., Iterator[Record]]] = {
    "cxr": generate_cxr,
    "nodule_ct": generate_nodule_ct,
    "brain_mri": generate_brain_mri,
    "abdomen_ct": generate_abdomen_ct,
    "cardiac_cine": generate_cardiac_cine,
    "chest_ct": chest_ct.generate_chest_ct,
    "limb_xray": limb_xray.generate_limb_xray,
    "mammogram": mammogram.generate_mammogram,
}

#: Generator name -> class names (index = label).
CLASS_NAMES: dict[str, list[str]] = {
    "cxr": CXR_CLASS_NAMES,
    "nodule_ct": NODULE_CT_CLASS_NAMES,
    # segmentation generators: voxel label names indexed by label value
    "brain_mri": BRAIN_MRI_CLASS_NAMES,
    "abdomen_ct": ABDOMEN_CT_CLASS_NAMES,
    "cardiac_cine": cardiac_cine.CLASS_NAMES,
    "chest_ct": chest_ct.CLASS_NAMES,
    "limb_xray": limb_xray.CLASS_NAMES,
    "mammogram": mammogram.CLASS_NAMES,
}

#: Generator name -> what ingest records in dataset.json beside the images: channel
#: names and voxel label names (segmentation generators only).
INFO: dict[str, dict] = {
    "brain_mri": {"channel_names": brain_mri.CHANNEL_NAMES, "labels": brain_mri.LABEL_NAMES},
    "abdomen_ct": {"channel_names": abdomen_ct.CHANNEL_NAMES, "labels": abdomen_ct.LABEL_NAMES},
    "cardiac_cine": {"channel_names": cardiac_cine.CHANNEL_NAMES, "labels": cardiac_cine.LABEL_NAMES},
    "chest_ct": {"channel_names": chest_ct.CHANNEL_NAMES, "labels": chest_ct.LABEL_NAMES},
}


def info(generator: str, params: dict) -> dict:
    """What ingest records in dataset.json for one generator run: :data:`INFO`, with the
    anatomical label names when the brain generator writes them (``labels: anatomy``)."""
    out = dict(INFO.get(generator, {}))
    if generator == "brain_mri" and params.get("labels") == "anatomy":
        out["labels"] = brain_mri.ANATOMY_NAMES
    return out


__all__ = [
    "ABDOMEN_CT_CLASS_NAMES",
    "BRAIN_MRI_CLASS_NAMES",
    "CLASS_NAMES",
    "CXR_CLASS_NAMES",
    "GENERATORS",
    "INFO",
    "info",
    "NODULE_CT_CLASS_NAMES",
    "generate_abdomen_ct",
    "generate_cardiac_cine",
    "generate_brain_mri",
    "generate_cxr",
    "generate_nodule_ct",
]
