"""Prompt templates (prompt ensembles), in the style of CLIP's, for the kinds of picture we evaluate on."""

GENERAL = [
    "a photo of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "an illustration of a {}.",
    "clip art of a {}.",
    "an icon of a {}.",
    "a cartoon {}.",
    "a {}.",
]

GREYSCALE = GENERAL + [
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a silhouette of a {}.",
    "a pixelated photo of a {}.",
]
