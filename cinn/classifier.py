"""A small CNN classifier that judges class-conditional samples ("class consistency").

A conditional model is only useful if a sample drawn for class ``y`` looks like a ``y``. The task
trains this classifier on the model's own training split (cached next to the run), reports its
test accuracy for reference, and measures the fraction of samples it assigns to the conditioning
class.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cinn.data import collate_images
from cinn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cinn.progress import track

CACHE_KIND = "cinn-classifier-cache"
"""The ``kind`` entry of the files :func:`cached_classifier` writes."""


class ImageClassifier(nn.Module):
    """Two conv blocks and an MLP head: images ``(B, C, H, W)`` in ``[0, 1]`` → logits ``(B, n_classes)``.

    ``H`` and ``W`` must be divisible by 4. About 0.4 M parameters for 28x28x1.

    Example:
        >>> logits = ImageClassifier((1, 28, 28), 10)(torch.rand(5, 1, 28, 28))   # (5, 10)
    """

    def __init__(self, image_shape: Sequence[int], n_classes: int, base_channels: int = 32):
        super().__init__()
        channels, height, width = image_shape
        if height % 4 or width % 4:
            raise ValueError(f"image height and width must be divisible by 4, got {height}x{width}")
        self.image_shape = tuple(image_shape)
        self.n_classes = n_classes
        self.features = nn.Sequential(
            nn.Conv2d(channels, base_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(base_channels, base_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(base_channels, 2 * base_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25),
                                  nn.Linear(2 * base_channels * (height // 4) * (width // 4), 128), nn.ReLU(),
                                  nn.Linear(128, n_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def dataset_fingerprint(dataset: Dataset) -> str:
    """A short hash of a dataset's size and first and last items, to tell cached classifiers apart."""
    picks = [dataset[i] for i in sorted({0, len(dataset) // 2, len(dataset) - 1})]
    digest = hashlib.sha256(str(len(dataset)).encode())
    for image, label in picks:
        digest.update(image.numpy().tobytes())
        digest.update(str(int(label)).encode())
    return digest.hexdigest()[:16]


def train_classifier(train_set: Dataset, n_classes: int, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0, device: torch.device | str = "cpu",
                     progress: bool = True) -> ImageClassifier:
    """Train an :class:`ImageClassifier` with Adam on uint8 images ``(C, H, W)`` and their labels."""
    device = torch.device(device)
    torch.manual_seed(seed)
    image, _ = train_set[0]
    model = ImageClassifier(tuple(image.shape), n_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate_images,
                        generator=torch.Generator().manual_seed(seed))
    model.train()
    for epoch in range(epochs):
        for images, labels in track(loader, f"classifier epoch {epoch + 1}/{epochs}", unit="batches",
                                    enabled=progress, leave=False):
            loss = nn.functional.cross_entropy(model(images.to(device).float() / 255), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predict(classifier: ImageClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted classes ``(N,)`` of float images ``(N, C, H, W)`` in ``[0, 1]`` (clamped first)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    return torch.cat([classifier(chunk.to(device).float().clamp(0, 1)).argmax(1).cpu()
                      for chunk in images.split(batch_size)])


@torch.no_grad()
def classifier_accuracy(classifier: ImageClassifier, dataset: Dataset, batch_size: int = 512) -> float:
    """Fraction of ``dataset`` (uint8 images, labels) classified correctly."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images)
    correct = total = 0
    for images, labels in loader:
        correct += (predict(classifier, images.float() / 255) == labels).sum().item()
        total += len(labels)
    return correct / total


def class_consistency(classifier: ImageClassifier, samples: Tensor, labels: Tensor) -> tuple[float, Tensor]:
    """Fraction of ``samples (N, C, H, W)`` in ``[0, 1]`` that ``classifier`` assigns to their ``labels (N,)``,
    overall and per class (``(n_classes,)``, NaN for a class with no samples)."""
    labels = labels.cpu()
    correct = (predict(classifier, samples) == labels).double()
    per_class = torch.full((classifier.n_classes,), float("nan"), dtype=torch.float64)
    for label in labels.unique():
        per_class[label] = correct[labels == label].mean()
    return correct.sum().item() / len(labels), per_class


def cached_classifier(path: str | Path, train_set: Dataset, test_set: Dataset, n_classes: int, *,
                      epochs: int = 3, seed: int = 0, device: torch.device | str = "cpu",
                      progress: bool = True) -> tuple[ImageClassifier, float]:
    """The classifier stored at ``path`` when it was trained on this very ``train_set`` (same fingerprint,
    classes and epochs), else a freshly trained one, saved there. Returns it and its test accuracy.

    A file at ``path`` that is not a classifier cache (a model's checkpoint, say) is a :class:`CheckpointError`
    and is left as it is: only a cache is ever replaced."""
    path = Path(path)
    key = {"fingerprint": dataset_fingerprint(train_set), "n_classes": n_classes, "epochs": epochs, "seed": seed}
    image, _ = train_set[0]
    if path.exists():
        state = load_classifier_cache(path, device)
        cached = restored_classifier(state, key, tuple(image.shape), n_classes, device)
        if cached is not None:
            return cached
    classifier = train_classifier(train_set, n_classes, epochs=epochs, seed=seed, device=device, progress=progress)
    accuracy = classifier_accuracy(classifier, test_set)
    save_checkpoint({"kind": CACHE_KIND, "key": key, "model": classifier.state_dict(), "test_accuracy": accuracy},
                    path)
    return classifier, accuracy


def load_classifier_cache(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The classifier cache at ``path``; any other file there (a model's checkpoint, text, a damaged file, a
    named pipe) is a :class:`CheckpointError`, so that it is never overwritten. Cheap (the cache is a few MiB),
    so a command calls it before any work to refuse a wrong path at once."""
    if path.is_dir():
        raise CheckpointError(f"classifier cache {path} is a folder, not a file; pass the path of the file to "
                              "read or write")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file, so it is not a classifier cache; it was left as it "
                              "is: give the classifier cache another path")
    try:
        state = load_checkpoint(path, map_location=device)
    except CheckpointError as error:
        raise CheckpointError(f"{path} is not a classifier cache ({error}); it was left as it is: give the "
                              "classifier cache another path (or delete the file)") from None
    if not is_classifier_cache(state):
        what = f"a checkpoint of the {state['task']!r} task" if "task" in state else "another cinn file"
        raise CheckpointError(f"{path} is not a classifier cache but {what}; it was left as it is: give the "
                              "classifier cache another path (or delete the file)")
    return state


def restored_classifier(state: dict[str, Any], key: dict[str, Any], image_shape: tuple[int, ...], n_classes: int,
                        device: torch.device | str) -> tuple[ImageClassifier, float] | None:
    """The classifier of a cache and its test accuracy, or None when the cache is of other data (another
    ``key``) or damaged (its weights do not fit, an entry is missing), so that it is trained again."""
    if state.get("key") != key:
        return None
    classifier = ImageClassifier(image_shape, n_classes).to(device)
    try:
        classifier.load_state_dict(state["model"])
        return classifier.eval(), float(state["test_accuracy"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None


def is_classifier_cache(state: dict[str, Any]) -> bool:
    """Whether a loaded cinn file is a classifier cache: marked as one, or, from before the mark, of the
    entries a cache has and nothing a model's checkpoint has."""
    if "kind" in state:
        return state["kind"] == CACHE_KIND
    return {"key", "model", "test_accuracy"} <= state.keys() and "task" not in state
