# Task family "detection" (casebook.tasks.detection): the data set's boxes (boxes.tsv,
# world mm) become voxel targets on each resampled, windowed volume; a centre-point
# heatmap detector and a U-Net whose connected components are the candidates, both on
# MONAI's U-Net, and MONAI's RetinaNet learn them; the test scans are scored by the
# LUNA16 protocol (FROC, CPM with bootstrap CIs, sensitivity by size) and MONAI's COCO
# mAP, and the detectors are compared side by side. Its hooks for the shared rules
# (train, targets), then its own rules.


def detection_settings(cs):
    return CASESTUDIES[cs].get("detection", {})


#: what the prepared volumes depend on (not the candidates' decoding or the bootstrap)
VOLUME_KEYS = ("spacing", "window", "channel", "pad_to")
#: what training reads: the patches, and the decoding of the validation CPM that picks the
#: best epoch (not the test scoring: a new bootstrap must not retrain)
TRAIN_KEYS = VOLUME_KEYS + (
    "patch",
    "positive_fraction",
    "min_score",
    "component_threshold",
    "max_candidates",
    "nms_iou",
)


def detection_subset(cs, keys):
    return {k: v for k, v in detection_settings(cs).items() if k in keys}


def detection_targets(cs):
    out = [
        f"results/{cs}/detection/metrics.json",
        f"results/{cs}/figures/froc.png",
        f"results/{cs}/figures/detection_overlays.png",
        f"results/{cs}/figures/sensitivity_by_size.png",
        f"results/{cs}/figures/detection_comparison.png",
    ]
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
        ]
    return out


FAMILY_HOOKS["detection"] = {
    "train_input": lambda wc: {
        "volumes": f"results/{wc.cs}/detection/volumes",
        "data": f"results/{wc.cs}/data",
        "splits": f"results/{wc.cs}/split/splits.json",
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
    },
    "train_params": lambda wc: {"detection": detection_subset(wc.cs, TRAIN_KEYS)},
    "targets": detection_targets,
}

DETECTION_CS = cases_of("detection")


include: "detection/rules.smk"
