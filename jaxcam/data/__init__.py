"""CIFAR-10-style image-classification data: sources (tfds, image-folder tree, official archive) and batching.

    train = jaxcam.data.load_cifar10("/path/to/cifar10_jpg_tree.tar.gz", split="train")
    for images, labels in jaxcam.data.batches(train, 128, shuffle=True, augment_images=True, seed=0):
        ...   # images uint8 (128, 32, 32, 3), labels int32 (128,)
"""
from jaxcam.data.pipeline import augment, batches, prefetch
from jaxcam.data.sources import CIFAR10_CLASSES, DataNotFoundError, Dataset, load_cifar10

__all__ = ["CIFAR10_CLASSES", "DataNotFoundError", "Dataset", "augment", "batches", "load_cifar10", "prefetch"]
