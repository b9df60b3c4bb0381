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

# Digits: CLIP's MNIST template plus a few for drawn and printed digits; the class names are "0".."9".
DIGITS = [
    'a photo of the number: "{}".',
    "a handwritten digit {}.",
    "the number {}.",
    "a drawing of the number {}.",
    "a black and white picture of the digit {}.",
]
