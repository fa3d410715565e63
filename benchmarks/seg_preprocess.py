"""Preprocessing throughput of the segmentation pipeline against SimpleITK alone.

Measured, in the same process and on the same volumes already in memory (reading the
files is part of neither timing):

* ours: ``casebook.tasks.segmentation.preprocess.preprocess_case`` per case: reorient to LPS,
  crop to the region of interest, resample to the target spacing (linear image, nearest
  neighbour label and roi), normalise the intensities, map label values to classes;
* baseline, "what you would do with SimpleITK alone": ``casebook.tasks.classification.preprocess.
  resample_to_spacing(image, spacing, is_label=False)`` plus a nearest-neighbour
  resample of the label onto the resampled image.

Both go over all cases once per repeat, alternating ours / baseline case by case (which
goes first swaps from one repeat to the next) so that the load of other jobs on the
machine hits both alike, after one warm-up case each that is not counted; the time of a
repeat is the sum over the cases, and the median over repeats is reported. Throughput is voxels of input per second (spatial voxels of
the original volumes, channels not multiplied in: the same count for both, so the ratio
of throughputs is the inverse ratio of the median times; the same ratio from CPU time,
time.process_time, is printed beside it as a check less sensitive to load). Target (from the issue):
ours / baseline >= 0.8; the script prints PASS or FAIL and exits 0 either way.

A last pass calls the module's step functions one by one (reorient, crop, resample,
to array, normalise, label classes), checks that together they give exactly what
``preprocess_case`` gives, and prints each step's share, which explains the ratio.

    .venv/bin/python benchmarks/seg_preprocess.py                        # synthetic brain MRI
    .venv/bin/python benchmarks/seg_preprocess.py --data synthetic-ct
    .venv/bin/python benchmarks/seg_preprocess.py --data brats --repeats 1
    .venv/bin/python benchmarks/seg_preprocess.py --cases 2 --repeats 1  # quick check

Data (``--data``):

* ``synthetic-brain``: ``GENERATORS["brain_mri"]`` (4-channel 64 x 64 x 48 at
  3 x 3 x 3.5 mm, BraTS labels 0/1/2/4, brain mask as roi), to 2 mm isotropic, z-score
  inside the roi;
* ``synthetic-ct``: ``GENERATORS["abdomen_ct"]`` (int16 HU 64 x 64 x 32 at 5 x 5 x 7.5 mm,
  labels 0-5, body mask as roi), to 2.5 x 2.5 x 3.75 mm, CT clip and z-score;
* ``brats``: the BraTS 2013 cases under ``../shared/data/brats2013/{train,validation,
  test}/<case>/`` (FLAIR and T1c composed into a 2-channel vector image, OTMultiClass
  labels 0-4, brain mask > its minimum as roi), 240 x 240 x 155 at 1 mm, to 2 mm
  isotropic, z-score inside the roi. Skipped with a message if the folder is missing.

The machine may be shared: the load average (os.getloadavg) is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

try:
    from casebook.imaging import resample_to_spacing
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from casebook.imaging import resample_to_spacing

from casebook.synthetic import GENERATORS
from casebook.tasks.segmentation import preprocess as seg

REPO = Path(__file__).resolve().parents[1]
BRATS_DIR = REPO.parent / "shared" / "data" / "brats2013"
TARGET = 0.8


@dataclass
class Source:
    """Cases in memory and how to preprocess them."""

    cases: list[tuple[str, sitk.Image, sitk.Image, sitk.Image]]  # name, image, label, roi
    spacing: tuple[float, ...]  # target (x, y, z) mm
    intensity: dict[str, Any]
    label_values: list[int]


def synthetic(generator: str, n: int, spacing, intensity, label_values) -> Source:
    cases = [(r.image_id, r.image, r.mask, r.roi) for r in GENERATORS[generator](n_patients=n, seed=0)]
    return Source(cases, spacing, intensity, label_values)


def brats(n: int | None) -> Source | None:
    folders = sorted(d for split in ("train", "validation", "test") for d in (BRATS_DIR / split).glob("*") if d.is_dir())
    if not folders:
        return None
    cases = []
    for folder in folders[:n]:
        flair, t1c = (sitk.ReadImage(str(folder / f)) for f in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"))
        image = sitk.Compose(flair, t1c)
        label = sitk.Cast(sitk.ReadImage(str(folder / "OTMultiClass.nii.gz")), sitk.sitkUInt8)  # stored as float 0..4
        mask = sitk.ReadImage(str(folder / "brainmask.nii.gz"))
        array = sitk.GetArrayViewFromImage(mask)
        roi = sitk.GetImageFromArray((array > array.min()).astype(np.uint8))
        roi.CopyInformation(mask)
        cases.append((folder.name, image, label, roi))
    return Source(cases, (2.0, 2.0, 2.0), {"scheme": "zscore", "use_roi": True}, [0, 1, 2, 3, 4])


def ours(source: Source, case) -> seg.Case:
    name, image, label, roi = case
    return seg.preprocess_case(
        image, label, roi, spacing=source.spacing, intensity=source.intensity, label_values=source.label_values, name=name
    )


def baseline(source: Source, case) -> tuple[sitk.Image, sitk.Image]:
    _, image, label, _ = case
    resampled = resample_to_spacing(image, source.spacing, is_label=False)
    return resampled, sitk.Resample(label, resampled, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


STEPS = ("reorient", "crop", "resample", "to array", "normalize", "label classes")


def stepwise(source: Source, case, times: dict[str, float], crop_margin: int = 2) -> seg.Case:
    """preprocess_case, step by step through the module's own functions, timing each."""
    name, image, label, roi = case

    def timed(step, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        times[step] += time.perf_counter() - start
        return out

    image, label, roi = timed("reorient", lambda: tuple(seg.reorient(x) for x in (image, label, roi)))
    index, size = timed("crop", lambda: seg.foreground_box(sitk.GetArrayViewFromImage(roi) > 0, crop_margin))
    image, label, roi = timed("crop", lambda: tuple(seg.crop(x, index, size) for x in (image, label, roi)))

    def resample():
        out = resample_to_spacing(image, source.spacing, is_label=False)
        nearest = (sitk.Resample(x, out, sitk.Transform(), sitk.sitkNearestNeighbor, 0, x.GetPixelID()) for x in (label, roi))
        return (out, *nearest)

    image, label, roi = timed("resample", resample)
    array = timed("to array", seg.channels_first, image)
    array = timed("normalize", seg.normalize, array, source.intensity, sitk.GetArrayViewFromImage(roi) > 0)
    classes = timed("label classes", seg.to_classes, sitk.GetArrayViewFromImage(label), source.label_values, name)
    return seg.Case(array, classes, seg.geometry_of(image), {"index": list(index), "size": list(size)})


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("synthetic-brain", "synthetic-ct", "brats"), default="synthetic-brain")
    parser.add_argument("--cases", type=int, default=None, help="number of cases (synthetic default 16, brats: all 6)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="SimpleITK threads (0: SimpleITK's default)")
    args = parser.parse_args()
    if (args.cases is not None and args.cases < 1) or args.repeats < 1:
        parser.error("--cases and --repeats must be at least 1")
    if args.threads > 0:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    print(f"load average (1/5/15 min) at start: {load()}; SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    start = time.perf_counter()
    if args.data == "synthetic-brain":
        source = synthetic("brain_mri", args.cases or 16, (2.0, 2.0, 2.0), {"scheme": "zscore", "use_roi": True}, [0, 1, 2, 4])
    elif args.data == "synthetic-ct":
        intensity = {"scheme": "ct", "channels": [{"clip": [-200, 300], "mean": 50, "std": 60}]}
        source = synthetic("abdomen_ct", args.cases or 16, (2.5, 2.5, 3.75), intensity, [0, 1, 2, 3, 4, 5])
    else:
        source = brats(args.cases)
        if source is None:
            print(f"skipped: no BraTS 2013 case folders under {BRATS_DIR}/{{train,validation,test}}")
            return
    first = source.cases[0][1]
    voxels = sum(int(np.prod(c[1].GetSize())) for c in source.cases)
    print(
        f"data {args.data}: {len(source.cases)} cases loaded in {time.perf_counter() - start:.1f} s (not timed), "
        f"e.g. {first.GetSize()} x {first.GetNumberOfComponentsPerPixel()} ch at {tuple(round(s, 2) for s in first.GetSpacing())} mm "
        f"-> {source.spacing} mm; {voxels / 1e6:.2f} M input voxels per pass"
    )

    runs = {"ours": (ours, []), "baseline": (baseline, [])}
    for fn, _ in runs.values():  # warm-up, not counted
        fn(source, source.cases[0])
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        totals, cpu_totals = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
        for case in source.cases:  # alternate case by case, in turn first, so load hits both alike
            for k in sorted(runs, reverse=bool(r % 2)):
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[k][0](source, case)
                totals[k] += time.perf_counter() - start
                cpu_totals[k] += time.process_time() - start_cpu
        for k in runs:
            runs[k][1].append(totals[k])
            cpu[k].append(cpu_totals[k])

    steps = dict.fromkeys(STEPS, 0.0)
    for case in source.cases:
        check, reference = stepwise(source, case, steps), ours(source, case)
        if not (np.array_equal(check.image, reference.image) and np.array_equal(check.label, reference.label)):
            raise SystemExit(f"{case[0]}: the step-by-step pass differs from preprocess_case; the breakdown would be wrong")

    median = {k: float(np.median(t)) for k, (_, t) in runs.items()}
    median_cpu = {k: float(np.median(t)) for k, t in cpu.items()}
    print(f"\n{'method':32s} {'median s':>9s} {'Mvox/s':>7s} {'ratio':>6s} {'CPU s':>7s}  all runs s")
    label = {"ours": "ours (preprocess_case)", "baseline": "baseline (SimpleITK resample)"}
    for k, (_, t) in runs.items():
        spread = " ".join(f"{x:.3f}" for x in t)
        ratio_k = median["baseline"] / median[k]
        print(f"{label[k]:32s} {median[k]:9.3f} {voxels / median[k] / 1e6:7.2f} {ratio_k:6.3f} {median_cpu[k]:7.3f}  {spread}")
    ratio = median["baseline"] / median["ours"]
    print(f"\nratio ours / baseline (voxels/s, median wall time): {ratio:.3f}  target >= {TARGET}: {'PASS' if ratio >= TARGET else 'FAIL'}")
    print(f"(same ratio from median CPU time, less sensitive to other jobs: {median_cpu['baseline'] / median_cpu['ours']:.3f})")

    total = sum(steps.values())
    print(f"\nours, step by step (one pass, {total:.3f} s):")
    print(f"{'step':16s} {'s':>8s} {'share':>6s}")
    for step, t in steps.items():
        print(f"{step:16s} {t:8.3f} {t / total:6.1%}")
    print(f"dominant step: {max(steps, key=steps.get)}")
    print(f"\nload average (1/5/15 min) at end: {load()}")


if __name__ == "__main__":
    main()
