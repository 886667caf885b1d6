"""Data sources for the tasks: MNIST-format idx files, CIFAR-10, CelebA, folders of images, and a seeded split.

Every source yields ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)`` and ``label`` an
``int64`` scalar (0 for unlabelled folders); :func:`collate_images` batches them to ``(B, C, H, W)`` and
``(B,)``. Scaling to ``[0, 1]``, quantisation and dequantisation are the objective's job
(:mod:`cinn.likelihood`), not the data's. Problems a user can fix (a missing, truncated or corrupt file,
an empty folder) raise :class:`DataError` with a one-sentence message naming the file.

Modules: :mod:`~cinn.data.errors` (``DataError``), :mod:`~cinn.data.idx` (idx files),
:mod:`~cinn.data.tensor_dataset` (in-memory datasets, batching), :mod:`~cinn.data.named_datasets` (MNIST,
Fashion-MNIST, CIFAR-10), :mod:`~cinn.data.images` (any image file → 8-bit PIL image),
:mod:`~cinn.data.photos` (scikit-image's photos), :mod:`~cinn.data.folder` (folders of images),
:mod:`~cinn.data.tagged` (photos tagged by a CSV photo list or by sub-folder),
:mod:`~cinn.data.loading` (a dataset by name or folder, and its split), :mod:`~cinn.data.class_folder`
(labelled images: named datasets or one sub-folder per class), :mod:`~cinn.data.celeba` (CelebA's faces and
their 40 attributes), :mod:`~cinn.data.attributes` (named binary attributes: classes or CelebA's).
"""

from cinn.data.attributes import BinaryAttributes, attribute_key, dataset_attributes
from cinn.data.celeba import CELEBA_SPLITS, CelebADataset, load_celeba
from cinn.data.class_folder import ClassFolderDataset, load_labelled_dataset
from cinn.data.errors import DataError
from cinn.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset, is_image_file
from cinn.data.idx import load_idx
from cinn.data.images import fit_square, open_image
from cinn.data.loading import DATASETS, is_dataset_name, load_dataset, register_dataset, split_dataset
from cinn.data.named_datasets import load_cifar10, load_mnist_like
from cinn.data.photos import SKIMAGE_PHOTOS, skimage_photo, square_photos
from cinn.data.places import PLACES365_SPLITS, Places365Dataset, load_places365
from cinn.data.tagged import TaggedPhotos, read_photo_list
from cinn.data.tensor_dataset import TensorImageDataset, cache_in_memory, collate_images

__all__ = [
    "CELEBA_SPLITS",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "PLACES365_SPLITS",
    "SKIMAGE_PHOTOS",
    "BinaryAttributes",
    "CelebADataset",
    "ClassFolderDataset",
    "DataError",
    "ImageFolderDataset",
    "Places365Dataset",
    "TaggedPhotos",
    "TensorImageDataset",
    "attribute_key",
    "cache_in_memory",
    "collate_images",
    "dataset_attributes",
    "fit_square",
    "is_dataset_name",
    "is_image_file",
    "load_celeba",
    "load_cifar10",
    "load_dataset",
    "load_idx",
    "load_labelled_dataset",
    "load_mnist_like",
    "load_places365",
    "open_image",
    "read_photo_list",
    "register_dataset",
    "skimage_photo",
    "split_dataset",
    "square_photos",
]
