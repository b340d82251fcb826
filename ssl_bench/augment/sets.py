"""Named augmentation sets: each factory returns a :class:`TwoViews` (recipe keys ``augment``,
``selection_augment``).

Recipes pick a set by name and may override its keyword arguments, e.g.::

    augment: {name: byol, size: 32, rotation: 90}

The random sets share one option schema (:class:`RandomViews`) and differ only in their defaults.
The registry checks the overrides against it (names and types) before any work starts;
:class:`ViewTransform` then checks the values (ranges) in one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from ssl_bench.augment.pipeline import TwoViews, ViewTransform, check_fraction
from ssl_bench.errors import SSLBenchError
from ssl_bench import catalog

__all__ = [
    "AUGMENTATIONS", "RandomViews", "SimCLRViews", "BYOLViews", "Rot90Views", "RandRotViews", "light", "flip",
    "none",
]

AUGMENTATIONS = catalog.AUGMENTATIONS

PaddingMode = Literal["reflection", "border", "zeros"]


PerView = Union[float, tuple[float, float]]  # one probability for both views, or (view 1, view 2)


def _per_view(option: str, value: PerView) -> tuple[float, float]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SSLBenchError(f"augmentation option {option} must be a probability or a pair (view 1, view 2), got "
                                f"{value!r}")
        return float(value[0]), float(value[1])
    return float(value), float(value)


@dataclass(eq=False)
class RandomViews(TwoViews):
    """The options of every random augmentation set, declared once; each registered set is a preset
    of them that changes only its defaults (any option can still be set in a recipe).

    Order per view (SimCLR/BYOL): random resized crop (area ``crop_scale``; ``crop: false`` = the
    full image, the "no crops" ablation of Nwabufo et al., arXiv 2402.14566) → flips → 90° / arbitrary
    rotation (one fused affine resample; corners filled by ``padding_mode``) → colour jitter (with
    probability ``jitter``) → grayscale → Gaussian blur (σ ~ U(``blur_sigma``) px, kernel ≈ 10 % of
    the side) → solarize.  ``blur`` and ``solarize`` are one probability for both views or a pair
    (view 1, view 2), as BYOL's asymmetric views; ``jitter: 0`` / ``grayscale: 0`` are the poster's
    "no colour jitter" / "no grayscale" ablations.
    """

    size: Optional[int] = None
    crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    rotation: float = 0.0
    padding_mode: PaddingMode = "reflection"
    jitter: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale: float = 0.2
    blur: PerView = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize: PerView = 0.0

    def __post_init__(self):
        blur, solarize = _per_view("blur", self.blur), _per_view("solarize", self.solarize)
        common = dict(
            size=self.size, crop_scale=self.crop_scale if self.crop else None, hflip=self.hflip, vflip=self.vflip,
            rot90=self.rot90, rotation=self.rotation, padding_mode=self.padding_mode, jitter=self.jitter,
            brightness=self.brightness, contrast=self.contrast, saturation=self.saturation, hue=self.hue,
            grayscale=self.grayscale, blur_sigma=self.blur_sigma,
        )
        TwoViews.__init__(
            self,
            ViewTransform(**common, blur=blur[0], solarize=solarize[0]),
            ViewTransform(**common, blur=blur[1], solarize=solarize[1]),
        )

    def __repr__(self) -> str:
        return TwoViews.__repr__(self)


@AUGMENTATIONS.register("simclr")
@dataclass(eq=False)
class SimCLRViews(RandomViews):
    """SimCLR views: random crop, hflip, colour jitter 0.8, grayscale 0.2 (t-SimCNE's 'default').

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    arXiv 2002.05709, Appendix A: crop (area 0.08–1) + flip, colour distortion (jitter with
    p = 0.8, grayscale with p = 0.2) and, on ImageNet only, Gaussian blur with p = 0.5. The jitter
    strengths are the colour-distortion strength 0.5 used for small images; blur is off by default
    (small images, as SimCLR's CIFAR-10 setting) and can be turned on with ``blur: 0.5``.
    """


@AUGMENTATIONS.register("byol")
@dataclass(eq=False)
class BYOLViews(RandomViews):
    """BYOL views: random crop, h/v flips, ±45° rotation, colour jitter, BYOL's blur/solarize.

    Zeng et al., "Additional Positive Enables Better Representation Learning for Medical Images"
    (BYOL-TracIn, arXiv 2306.00112, §4.1) train BYOL with random flips, rotation, colour jitter and
    random resized crop. Magnitudes here are BYOL's where BYOL has the op (Grill et al., arXiv
    2006.07733: crop area 0.08–1, hflip 0.5, jitter p = 0.8 with (0.4, 0.4, 0.2, 0.1), grayscale
    0.2, and the asymmetric blur p = (1.0, 0.1) / solarize p = (0.0, 0.2) for (view1, view2),
    which cost little in the batched pipeline). The vertical flip (0.5) and the ±45° rotation with
    reflection fill are our choices for orientation-free medical images. At 28 px the blur kernel
    is 3 px wide; pass ``blur: 0`` to turn it off or a smaller ``blur_sigma`` to soften it.
    """

    vflip: float = 0.5
    rotation: float = 45.0
    saturation: float = 0.2
    blur: PerView = (1.0, 0.1)
    solarize: PerView = (0.0, 0.2)


@AUGMENTATIONS.register("rot90")
@dataclass(eq=False)
class Rot90Views(RandomViews):
    """SimCLR views + random 90° rotations (t-SimCNE on medical images).

    Nwabufo, Böhm, Berens & Kobak, "Self-supervised Visualisation of Medical Image Datasets"
    (t-SimCNE on medical images, MIDL 2024 short paper, arXiv 2402.14566) find that adding
    rotations to the natural-image augmentations improves class separation for medical images,
    whose content has no canonical orientation. k ∈ {0, 1, 2, 3} uniform; with the horizontal flip
    this covers all 8 symmetries of the square, and multiples of 90° need no fill.
    """

    rot90: bool = True


@AUGMENTATIONS.register("randrot")
@dataclass(eq=False)
class RandRotViews(RandomViews):
    """SimCLR views + arbitrary rotation (uniform ±180°, reflection fill).

    Nwabufo et al. (arXiv 2402.14566, MIDL 2024) report that arbitrary rotations improve t-SimCNE
    embeddings of medical images. The corners a rotation brings in are filled by reflecting the
    image ('reflection'; or 'border' / 'zeros'): black corners would be a cue of the rotation angle.
    """

    rotation: float = 180.0


@AUGMENTATIONS.register("light")
def light(size: Optional[int] = None, crop: float = 0.875) -> TwoViews:
    """Deterministic selection views: identity and hflip of a centre crop (BYOL-TracIn §4.1).

    Light views for the selection step of BYOL-TracIn (arXiv 2306.00112, §4.1), where samples are
    compared on weakly augmented views rather than on the random training views. view1 is the
    image resized to ``size``; view2 is its horizontal flip after a centre crop of side fraction
    ``crop`` (resized back to ``size``). No randomness: the generator is left untouched, so using
    these views does not shift the random stream of the training views.
    """
    crop = check_fraction("crop", crop)
    return TwoViews(
        ViewTransform(size=size, crop_scale=None),
        ViewTransform(size=size, crop_scale=None, center_crop=crop, hflip=1.0),
    )


@AUGMENTATIONS.register("flip")
def flip(size: Optional[int] = None, hflip: float = 0.5, vflip: float = 0.0) -> TwoViews:
    """Random flips only, of the whole image (resized to ``size``): fine-tuning's default views.

    Fine-tuning on the pre-training views (area-0.08 crops, colour jitter) at 28–32 px often crops the
    lesion away: a from-scratch ResNet-18 fine-tuned on them stayed at chance on HAM10000 (BMA 0.143)
    and reached AUC 0.755 on BreastMNIST where MedMNIST v2 reports 0.901 without augmentation
    (docs/validation.md has the measurements that chose this default).
    """
    view = ViewTransform(size=size, crop_scale=None, hflip=hflip, vflip=vflip)
    return TwoViews(view, view)


@AUGMENTATIONS.register("none")
def none(size: Optional[int] = None) -> TwoViews:
    """Two un-augmented views (resized to ``size``), for debugging and ablations."""
    view = ViewTransform(size=size, crop_scale=None)
    return TwoViews(view, view)
