"""Twenty-image samples of ImageNet (512 px photos), CIFAR-10 and CIFAR-100 from PyPI `foolbox==3.3.4`'s
data folder (read without importing foolbox).  File names are `{set}_{i}_{label}.{png,jpg}`.

Tiny, so their numbers are noisy; they are here because they are the only real photographs of those
benchmarks that install offline, and the ImageNet one can be scored by the image tower's own classifier.
"""

from __future__ import annotations

import re

from locktune.data.images import FileImages
from locktune.data.packages import python_package_path
from locktune.eval.assets import imagenet_class_names, templates
from locktune.eval.benchmarks.base import BENCHMARKS, ClassificationSet

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom", "oak tree", "orange",
    "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow tree", "wolf", "woman", "worm",
]
# CIFAR-10 class -> the ImageNet-1k classes it covers (hand-made; ImageNet has no deer, so the antelopes
# stand in).  Used only for the supervised-classifier reference.
CIFAR10_TO_IMAGENET = [
    [404, 895],  # airplane: airliner, military aircraft
    [436, 468, 511, 609, 627, 656, 717, 751, 817],  # automobile
    list(range(7, 25)) + list(range(80, 101)) + list(range(127, 147)),  # birds
    list(range(281, 286)),  # domestic cats
    [351, 352, 353],  # deer: hartebeest, impala, gazelle
    list(range(151, 269)),  # dog breeds
    [30, 31, 32],  # frogs
    [339, 603],  # sorrel horse, horse cart
    [403, 484, 510, 625, 628, 724, 780, 833, 871, 914],  # ships and boats
    [555, 569, 675, 717, 864, 867],  # trucks
]


def _sample(prefix: str) -> tuple[list, list[int]]:
    root = python_package_path("foolbox", "foolbox==3.3.4", f"benchmark 'foolbox_{prefix}'") / "data"
    pattern = re.compile(rf"^{prefix}_(\d+)_(\d+)\.(png|jpg)$")
    rows = sorted((int(m.group(1)), int(m.group(2)), p) for p in root.iterdir() if (m := pattern.match(p.name)))
    return [p for _, _, p in rows], [label for _, label, _ in rows]


@BENCHMARKS.register("foolbox_imagenet")
def foolbox_imagenet(max_images: int = 0) -> ClassificationSet:
    paths, labels = _sample("imagenet")
    # CLIP's 7-template ImageNet set: 1,000 classes x 80 templates would cost ~80k text forwards on a CPU.
    return ClassificationSet("foolbox_imagenet", FileImages(paths), labels, imagenet_class_names(),
                             templates("imagenet_simple"), [[i] for i in range(1000)])


@BENCHMARKS.register("foolbox_cifar10")
def foolbox_cifar10(max_images: int = 0) -> ClassificationSet:
    paths, labels = _sample("cifar10")
    return ClassificationSet("foolbox_cifar10", FileImages(paths), labels, CIFAR10_CLASSES, templates("cifar10"),
                             CIFAR10_TO_IMAGENET)


@BENCHMARKS.register("foolbox_cifar100")
def foolbox_cifar100(max_images: int = 0) -> ClassificationSet:
    paths, labels = _sample("cifar100")
    return ClassificationSet("foolbox_cifar100", FileImages(paths), labels, CIFAR100_CLASSES, templates("cifar100"))
