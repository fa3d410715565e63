"""The task registry: the one place a task family is declared.

A family is a package under ``casebook.tasks`` (its networks, training hooks,
evaluation and figures), a rules file ``workflow/rules/<family>.smk`` (its own rules),
a section of the case-study schema (the keys only it reads) and report captions. The
rules every family shares (train, robustness) look the family of a case study up here
and call its stage functions by name, so a case study with an unknown ``task:`` is an
error, never another family's rules.

This module imports no torch, MONAI or family package: Snakemake reads it while it
plans, and a job imports only the family it runs (:func:`stage`).

Adding a family: its package with a ``stages`` module, its ``.smk``, its schema
section, its captions, and one entry in :data:`TASKS` (README: "Adding a task family").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class TaskFamily:
    """One task family.

    ``networks``: the network names a model may choose (``network: {name: ...}``);
    the family's builder must know exactly these (a test checks it).
    ``sections``: case-study keys that only this family reads (its schema section);
    ``required``: the keys a case study of this family must set.
    ``train_keys``: keys of ``train`` (the case study's or a model's) that only this
    family reads.
    ``selection_metric``: the validation column of the training history that picks a
    model's best epoch (higher is better); ``selection_label`` names it in figures, and
    ``loss_label`` names the training loss.
    ``image_labels``: every image needs a class label (ingest refuses unlabelled ones).
    ``model_sections``: case-study sections every model's settings carry (the rules'
    ``model`` params).
    ``stages``: the shared rules the family implements, each a function of
    ``casebook.tasks.<name>.stages`` taking the job (casebook.scripting.Job).
    """

    name: str
    description: str
    networks: tuple[str, ...]
    sections: tuple[str, ...]
    required: tuple[str, ...]
    selection_metric: str
    selection_label: str
    loss_label: str
    image_labels: bool = False
    train_keys: tuple[str, ...] = ()
    model_sections: tuple[str, ...] = ()
    stages: tuple[str, ...] = ("train", "robustness")

    @property
    def package(self) -> str:
        return f"{__name__}.{self.name}"


TASKS: dict[str, TaskFamily] = {
    family.name: family
    for family in (
        TaskFamily(
            name="classification",
            description="image labels (2D or 3D), one cached array per image",
            networks=("resnet10", "resnet18", "resnet34", "resnet50", "densenet", "densenet121", "densenet169"),
            sections=("preprocess", "explain"),
            required=("models", "preprocess"),
            selection_metric="val_auc",
            selection_label="AUC",
            loss_label="cross-entropy",
            image_labels=True,
            stages=("train", "robustness", "train_federated", "evaluate_federated"),
        ),
        TaskFamily(
            name="segmentation",
            description="voxel labels (3D, patch-based, sliding-window inference)",
            networks=("unet", "segresnet", "dynunet", "unetr", "swinunetr"),
            sections=("segmentation",),
            required=("models",),
            selection_metric="val_dice",
            selection_label="Dice",
            loss_label="Dice + cross-entropy",
            train_keys=("loss",),
            model_sections=("segmentation",),
        ),
        TaskFamily(
            name="restoration",
            description="image restoration (2D slices): low-dose CT denoising, thick-slice super-resolution, contrast translation, inpainting",
            networks=("redcnn", "unet", "diffusion"),
            sections=("restoration",),
            required=("models", "restoration"),
            selection_metric="val_psnr",
            selection_label="PSNR (dB)",
            loss_label="mean squared error",
            train_keys=("adversarial",),
            stages=("train",),
        ),
        TaskFamily(
            name="generation",
            description="class-conditional image synthesis (2D diffusion in pixels or in a VAE's latents), judged, checked for memorization, used downstream",
            networks=("ddpm", "ldm"),
            sections=("generation",),
            required=("models",),
            selection_metric="val_neg_loss",
            selection_label="-(noise MSE)",
            loss_label="noise-prediction MSE",
            image_labels=True,
            stages=("train",),
        ),
        TaskFamily(
            name="registration",
            description="deformable registration (2D pairs with known deformations): VoxelMorph, LocalNet and GlobalNet against SimpleITK's B-spline",
            networks=("voxelmorph", "localnet", "globalnet"),
            sections=("registration",),
            required=("models",),
            selection_metric="val_dice",
            selection_label="Dice of the warped labels",
            loss_label="similarity + regularization",
            train_keys=("similarity", "regularization"),
            stages=("train",),
        ),
        TaskFamily(
            name="detection",
            description="findings as boxes (2D, 3D): a centre-point heatmap detector, a U-Net with connected components and MONAI's RetinaNet, scored by FROC and CPM (LUNA16)",
            networks=("centre_point", "unet_components", "retinanet"),
            sections=("detection",),
            required=("models",),
            selection_metric="val_cpm",
            selection_label="CPM",
            loss_label="focal heatmap + size L1 (centre_point); masked Dice + CE (unet_components); anchor BCE + box regression (retinanet)",
            stages=("train",),
        ),
        TaskFamily(
            name="comparison",
            description="comparative studies of classifiers (2D, 3D): CNNs against transformers, pretrained or not, probed or fine-tuned, over a sweep of labelled patients or of prevalence, with the same seeds for every arm",
            networks=("resnet", "vit", "swin"),
            sections=("comparison",),
            required=("models", "comparison"),
            selection_metric="val_auc",
            selection_label="AUC",
            loss_label="cross-entropy",
            image_labels=True,
            train_keys=("sampling", "focal"),
            stages=(),
        ),
    )
}


class UnknownTask(ValueError):
    """A case study names a task that no family declares."""


def family(task: str, where: str = "case study") -> TaskFamily:
    """The family of ``task``; an error naming ``where`` (the case-study file) and the known tasks."""
    if task not in TASKS:
        raise UnknownTask(f"{where}: unknown task {task!r}; the known tasks are {sorted(TASKS)}")
    return TASKS[task]


def casestudy_problems(cs: dict[str, Any]) -> list[str]:
    """What a case study of its family lacks or sets that belongs to another family."""
    fam = family(cs.get("task", "classification"))
    problems = [f"task {fam.name} needs '{key}'" for key in fam.required if key not in cs]
    trains = [("", cs.get("train") or {})] + [(f"model {m!r}: ", spec.get("train") or {}) for m, spec in (cs.get("models") or {}).items()]
    for other in (t for t in TASKS.values() if t.name != fam.name):
        problems += [
            f"'{key}' is a setting of task {other.name}, not {fam.name}" for key in other.sections if key in cs and key not in fam.sections
        ]
        problems += [
            f"{owner}'train.{key}' is a setting of task {other.name}, not {fam.name}"
            for owner, train in trains
            for key in other.train_keys
            if key in train and key not in fam.train_keys
        ]
    for model, spec in (cs.get("models") or {}).items():
        name = (spec.get("network") or {}).get("name")
        if name not in fam.networks:
            problems.append(f"model {model!r}: network {name!r} is not a {fam.name} network; choose one of {sorted(fam.networks)}")
    return problems


def stage(task: str, name: str) -> Callable[..., Any]:
    """The function that runs shared rule ``name`` for ``task`` (imports only that family)."""
    fam = family(task)
    if name not in fam.stages:
        raise ValueError(f"task {task} has no stage {name!r}; it has {list(fam.stages)}")
    return getattr(importlib.import_module(f"{fam.package}.stages"), name)
