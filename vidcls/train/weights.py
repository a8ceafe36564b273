"""The model a fine-tuning run starts from: architecture of --model, classes of the data, weights of --init.

--init none      random initialisation
--init REF       the weights of any model REF (zoo name, hf://, directory; foreign key layouts
                 are translated); its classifier is kept when the data's classes are among its
                 labels (each class trained as the model's own index), else replaced by a fresh one
--init imagenet  ImageNet-21k ViT-B/16 weights inflated to video (vidcls.zoo.convert.timm)
default          the weights of --model itself when it has any, else random
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vidcls.errors import UsageError
from vidcls.models import build_model, make_config
from vidcls.models.base import VideoClassifier
from vidcls.zoo import hub
from vidcls.zoo.bounded import MAX_BYTES
from vidcls.zoo.convert import to_vidcls
from vidcls.zoo.convert.timm import FAMILIES as IMAGENET_FAMILIES
from vidcls.zoo.convert.timm import IMAGENET_REF, init_from_image_state
from vidcls.zoo.modeldir import WEIGHTS_NAME, ModelCard, load_strict, read_safetensors
from vidcls.zoo.resolve import resolve


@dataclass
class StartingModel:
    """A freshly built training model, and one line saying where its weights came from."""

    card: ModelCard
    module: VideoClassifier
    origin: str


def starting_model(ref: str, init: str | None, classes: list[str], name: str,
                   inflate: str = "central") -> StartingModel:
    """Build --model's architecture with a head for `classes`, initialised as --init says.

    The card's labels say which output is which class: `classes` for a new head, the model's own
    labels when its head is kept (head_labels); train with label_indices against them.
    inflate: how --init imagenet spreads the image patch kernel over a tubelet (central | average).
    """
    # with --init only the architecture of --model is needed: nothing is downloaded that would not be used
    source = resolve(ref, need_weights=init is None)
    source_card, source_weights = source.card, source.weights
    card = replace(source_card, name=name, arch={**source_card.arch, "num_classes": len(classes)},
                   labels=list(classes))
    if init == "imagenet":
        if card.family not in IMAGENET_FAMILIES:  # before a download that could not be used
            raise UsageError(f"--init imagenet: no ImageNet initialisation for family {card.family!r}; "
                             f"supported: {', '.join(IMAGENET_FAMILIES)}")
        module = build_model(card.family, card.arch, frames=card.input.frames, size=card.input.size)
        report = init_from_image_state(module, _imagenet_state(), inflate, source=IMAGENET_REF)
        return StartingModel(card, module, f"the ImageNet image model {report.source} ({len(report.loaded)} "
                                           f"tensors; {len(report.kept)} video-only tensors and the head keep "
                                           f"their initialisation)")
    if init == "none" or (init is None and source_weights is None):
        return StartingModel(card, build_model(card.family, card.arch, frames=card.input.frames,
                                               size=card.input.size), f"random initialisation of {ref!r}")
    init_ref, init_card, init_weights = ref, source_card, source_weights
    if init is not None:
        init_ref = init
        init_card, init_weights = (resolved := resolve(init)).card, resolved.weights
        if init_weights is None:
            raise UsageError(f"--init {init}: that model has no weights (an architecture only)")
        if init_card.family != card.family:
            raise UsageError(f"--init {init} is a {init_card.family!r} model but --model {ref} is "
                             f"{card.family!r}; the weights cannot fit")
    state, _, _ = to_vidcls(read_safetensors(init_weights))
    old_classes = make_config(init_card.family, init_card.arch).num_classes
    module = build_model(card.family, {**card.arch, "num_classes": old_classes}, frames=card.input.frames,
                         size=card.input.size)
    kept = head_labels(classes, init_card.labels)
    replaced = load_with_head(module, state, init_ref, None if kept else len(classes))
    if kept:
        card = replace(card, arch={**card.arch, "num_classes": len(kept)}, labels=kept)
        return StartingModel(card, module, f"weights of {init_ref!r}, its {len(kept)}-class head kept: the data's "
                                           f"{len(classes)} classes are among its labels, each trained as the "
                                           f"model's own class")
    return StartingModel(card, module, f"weights of {init_ref!r}; its {old_classes}-class head replaced by a new "
                                       f"{len(classes)}-class head ({', '.join(replaced)}): the data's classes are "
                                       f"not all among its labels")


def head_labels(classes: Sequence[str], model_labels: Sequence[str] | None) -> list[str] | None:
    """The model's labels when every class of the data is one of them, else None.

    Its head then stays and each class is trained as the model's own index for that name: the
    data's sorted folder order (down, left, right, up) is not the model's (left, right, up, down),
    and a head kept by class count alone would learn every class as another. Names are compared
    exactly; a model without names gets a new head.
    """
    if model_labels and set(classes) <= set(model_labels):
        return list(model_labels)
    return None


def load_with_head(module: VideoClassifier, state: dict[str, torch.Tensor], source: str | Path,
                   new_classes: int | None) -> list[str]:
    """Load `state` strictly into `module`, built at the class count of the weights, then, when
    `new_classes` is given, give it a fresh classifier for that many classes (even as many as
    before: new names, new head); returns the replaced classifier's keys.

    Any difference between the weights and the model means the architectures differ, which
    is an error: the classifier is found by the model's interface, never guessed from shapes.
    """
    load_strict(module, state, str(source))
    if new_classes is None:
        return []
    module.reset_classifier(new_classes)
    return sorted(f"{module.classifier_name}.{key}" for key in module.get_classifier().state_dict())


def _imagenet_state() -> dict[str, torch.Tensor]:
    """`--init imagenet`: timm's ViT-B/16 IN-21k from the Hub (or its cache), verified. Downloading is
    the zoo's job and mapping the convert package's; this is where training brings the two together."""
    weights = hub.fetch_verified(hub.parse_hf_ref(IMAGENET_REF), WEIGHTS_NAME,
                                 how_to_fetch=f"vidcls download {IMAGENET_REF}", limit=MAX_BYTES)
    return read_safetensors(weights.path)
