"""Small files in the real formats of public data sets, for tests: a Decathlon task
folder (4D multi-channel NIfTI, labels, dataset.json, the AppleDouble junk of the real
tarballs), BraTS-style case folders, and DICOM CT series with identifiers planted in
their headers."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# Identifiers planted in the generated DICOM headers; none may reach any output.
PHI = {
    "PatientName": "Doe^Jonathan",
    "PatientID": "MRN-77123456",
    "PatientBirthDate": "19470312",
    "AccessionNumber": "ACC-99887766",
    "InstitutionName": "Saint Elsewhere Hospital",
    "ReferringPhysicianName": "Kildare^James",
    "StudyID": "STUDY-4242",
}


def _volume(shape, seed, n_channels=1):
    """A blob on a noisy background, and its two-class label (core 2 inside rim 1)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    r = np.sqrt(((np.stack([z, y, x], -1) - centre) ** 2).sum(-1))
    label = np.where(r < 2.5, 2, np.where(r < 4.5, 1, 0)).astype(np.uint8)
    channels = [rng.normal(100 * (c + 1), 5, shape) + 50 * label for c in range(n_channels)]
    return np.stack(channels, -1).astype(np.float32), label


def make_msd_task(root: Path, *, name: str = "Task99_Toy", n_cases: int = 4, channels=("FLAIR", "T1w")) -> Path:
    """A Decathlon task folder: 4D images (x, y, z, channel) and labels at 1 x 1 x 2 mm."""
    task = root / name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_cases):
        image, label = _volume((8, 16, 16), seed=i, n_channels=len(channels))
        case = f"toy_{i:03d}.nii.gz"
        # a 4D NIfTI with channels last in (x, y, z, c): SimpleITK array order is (c, z, y, x)
        img4d = sitk.GetImageFromArray(np.moveaxis(image, -1, 0), isVector=False)
        img4d.SetSpacing((1.0, 1.0, 2.0, 1.0))
        img4d.SetOrigin((-8.0, -8.0, 10.0, 0.0))
        sitk.WriteImage(img4d, str(task / "imagesTr" / case))
        seg = sitk.GetImageFromArray(label)
        seg.SetSpacing((1.0, 1.0, 2.0))
        seg.SetOrigin((-8.0, -8.0, 10.0))
        sitk.WriteImage(seg, str(task / "labelsTr" / case))
        (task / "imagesTr" / f"._{case}").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
        training.append({"image": f"./imagesTr/{case}", "label": f"./labelsTr/{case}"})
    description = {
        "name": name,
        "modality": {str(i): c for i, c in enumerate(channels)},
        "labels": {"0": "background", "1": "rim", "2": "core"},
        "numTraining": n_cases,
        "training": training,
        "test": [],
    }
    (task / "dataset.json").write_text(json.dumps(description, indent=2))
    return task


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent))
    return archive


def write_ct_series(folder: Path, *, phi: dict, seed: int, n_slices: int = 6, size: int = 16) -> np.ndarray:
    """One axial CT series (one file per slice, shuffled names) with ``phi`` in every header.

    Returns the volume in Hounsfield units, (z, y, x).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 400, (n_slices, size, size)).astype(np.int16)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    order = rng.permutation(n_slices)
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, frame_uid
        ds.Modality = "CT"
        for keyword, value in phi.items():
            setattr(ds, keyword, value)
        ds.InstanceNumber = int(order[k]) + 1  # deliberately wrong: order must come from positions
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-5.6, -5.6, 100.0 + 2.5 * k]
        ds.SliceThickness = 2.5
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        pydicom.dcmwrite(folder / f"{int(order[k]):04d}_{rng.integers(1e6)}.dcm", ds, enforce_file_format=True)
    return hu


def make_luna16(root: Path, *, n_scans: int = 8, seed: int = 0) -> list[str]:
    """A LUNA16 folder as its archives extract: synthetic chest CTs (casebook's generator)
    as MetaImage files named by made-up series UIDs in subset0 and subset1, a scanner-like
    origin, ``annotations.csv`` with each nodule's world centre and diameter, and the
    excluded findings in ``evaluationScript/annotations/annotations_excluded.csv``.
    Returns the series UIDs."""
    from casebook.synthetic.chest_ct import generate_chest_ct

    uids, rows, excluded = [], [], []
    shift = np.array([-120.0, -150.0, -310.0])  # scanner coordinates are not volume-centred
    for i, rec in enumerate(generate_chest_ct(n_patients=n_scans, seed=seed)):
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{900000000000 + 7919 * (i + 1)}"
        image = rec.image
        image.SetOrigin(tuple(np.array(image.GetOrigin()) + shift))
        folder = root / f"subset{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / f"{uid}.mhd"))
        for box in rec.boxes:
            (excluded if box.excluded else rows).append((uid, *(np.array(box.centre) + shift), box.diameter))
        uids.append(uid)
    header = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
    (root / "annotations.csv").write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
    table = root / "evaluationScript/annotations/annotations_excluded.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(header + "".join(",".join(map(str, r)) + "\n" for r in excluded))
    return uids


def make_fracatlas(root: Path, *, n_images: int = 8, seed: int = 0) -> dict[str, list[list[float]]]:
    """A FracAtlas folder as its archive extracts: casebook's synthetic limb radiographs as
    colour JPEG files (grey in three channels, as FracAtlas's are) under
    images/Fractured and images/Non_fractured, ``dataset.csv``, the fractures' COCO boxes
    ([x, y, w, h] in pixels, edges on pixel boundaries) and the official split of the
    fractured images. Returns the COCO boxes by file name."""
    from casebook.layout import _to_sitk
    from casebook.synthetic.limb_xray import generate_limb_xray

    def layout_image(rec):  # the record's array on its grid, as ingest would write it
        return _to_sitk(rec.image, rec.spacing, rec.origin, rec.direction)

    images, annotations, rows, boxes = [], [], [], {}
    for i, rec in enumerate(generate_limb_xray(n_patients=n_images, seed=seed)):
        rec.boxes = rec.boxes or []
        name = f"IMG{1000 + i:07d}.jpg"
        image = layout_image(rec)
        array = sitk.GetArrayFromImage(image)
        grey = np.clip(np.rint(255 * (array - array.min()) / (np.ptp(array) + 1e-6)), 0, 255).astype(np.uint8)
        fractured = bool(rec.boxes)
        folder = root / "images" / ("Fractured" if fractured else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey] * 3, axis=-1), isVector=True), str(folder / name))
        images.append({"id": i, "width": grey.shape[1], "height": grey.shape[0], "file_name": name})
        spacing = np.array(image.GetSpacing())
        for box in rec.boxes:  # world mm to pixel centres, then to COCO's pixel-boundary corners
            centre = image.TransformPhysicalPointToContinuousIndex(box.centre)
            w, h = np.array(box.size) / spacing
            bbox = [centre[0] + 0.5 - w / 2, centre[1] + 0.5 - h / 2, w, h]
            annotations.append({"id": len(annotations), "image_id": i, "category_id": 0, "iscrowd": 0, "bbox": bbox, "area": w * h})
            boxes.setdefault(name, []).append(bbox)
        rows.append(f"{name},0,1,0,0,0,0,0,{int(fractured)},{len(rec.boxes)},1,0,0")
    coco = root / "Annotations/COCO JSON/COCO_fracture_masks.json"
    coco.parent.mkdir(parents=True)
    coco.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": [{"id": 0, "name": "fractured"}]}))
    header = "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique\n"
    (root / "dataset.csv").write_text(header + "\n".join(rows) + "\n")
    split = root / "Utilities/Fracture Split"
    split.mkdir(parents=True)
    fractured = sorted(boxes)
    (split / "train.csv").write_text("image_id\n" + "".join(f"{n}\n" for n in fractured[:-1]))
    (split / "test.csv").write_text("image_id\n" + "".join(f"{n}\n" for n in fractured[-1:]))
    return boxes
