"""Image-classification data: sources (image-folder trees as directory/.tar.gz/.zip, tfds by name, the
official CIFAR-10 archive) and batching.

    train = jaxcam.data.load_dataset("/path/to/tree.tar.gz", "train")   # Dataset(images uint8, labels, class_names)
    for images, labels in jaxcam.data.batches(train, 128, shuffle=True, seed=0):
        ...
"""
from jaxcam.data.datasets import eval_split, human_names, is_local, load_dataset, load_tfds
from jaxcam.data.pipeline import augment, batches, prefetch
from jaxcam.data.sources import CIFAR10_CLASSES, DataNotFoundError, Dataset, load_cifar10

__all__ = ["CIFAR10_CLASSES", "DataNotFoundError", "Dataset", "augment", "batches", "eval_split", "human_names",
           "is_local", "load_cifar10", "load_dataset", "load_tfds", "prefetch"]
