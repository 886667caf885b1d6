"""The class-consistency judge: it learns, it is cached per data set, and consistency is a plain fraction."""

from __future__ import annotations

import pytest
import torch

from cinn.classifier import ImageClassifier, cached_classifier, class_consistency, dataset_fingerprint
from cinn.data import TensorImageDataset
from cinn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def striped_digits(n: int, seed: int) -> TensorImageDataset:
    """Class k: a bright horizontal bar at row 4k + 2 (easy to learn in one epoch)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=generator)
    images = torch.randint(0, 30, (n, 1, 20, 20), generator=generator, dtype=torch.uint8)
    for index, label in enumerate(labels.tolist()):
        images[index, 0, 4 * label + 1:4 * label + 3] = 250
    return TensorImageDataset(images, labels, 5)


def test_classifier_learns_and_is_cached(tmp_path):
    train, test = striped_digits(600, 0), striped_digits(200, 1)
    path = tmp_path / "classifier.pt"
    classifier, accuracy = cached_classifier(path, train, test, 5, epochs=2, progress=False)
    assert accuracy > 0.95
    assert path.is_file()
    again, cached_accuracy = cached_classifier(path, train, test, 5, epochs=2, progress=False)
    assert cached_accuracy == accuracy
    assert all(torch.equal(a, b) for a, b in zip(classifier.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    other = striped_digits(600, 2)
    assert dataset_fingerprint(other) != dataset_fingerprint(train)


def test_class_consistency_is_the_fraction_assigned_to_the_label():
    classifier = ImageClassifier((1, 8, 8), 3).eval()
    images = torch.rand(6, 1, 8, 8)
    predicted = classifier(images).argmax(1)
    labels = predicted.clone()
    labels[:2] = (labels[:2] + 1) % 3
    overall, per_class = class_consistency(classifier, images, labels)
    assert overall == 4 / 6
    expected = [(labels[labels == k] == predicted[labels == k]).double().mean().item() for k in range(3)]
    assert per_class.tolist() == pytest.approx(expected, nan_ok=True)


def test_a_file_that_is_not_a_classifier_cache_is_never_overwritten(tmp_path):
    train, test = striped_digits(64, 0), striped_digits(32, 1)
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint({"task": "mnist", "model": {}, "config": {}}, checkpoint)
    before = checkpoint.read_bytes()
    with pytest.raises(CheckpointError, match="is not a classifier cache but a checkpoint of the 'mnist' task"):
        cached_classifier(checkpoint, train, test, 5, epochs=1, progress=False)
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        cached_classifier(tmp_path, train, test, 5, epochs=1, progress=False)
    assert checkpoint.read_bytes() == before


def test_a_classifier_cache_of_other_data_is_replaced(tmp_path):
    train, test = striped_digits(64, 0), striped_digits(32, 1)
    path = tmp_path / "classifier.pt"
    cached_classifier(path, train, test, 5, epochs=1, progress=False)
    cached_classifier(path, striped_digits(64, 2), test, 5, epochs=1, progress=False)
    assert load_checkpoint(path)["key"]["fingerprint"] == dataset_fingerprint(striped_digits(64, 2))


def test_a_damaged_classifier_cache_is_trained_again(tmp_path):
    train, test = striped_digits(64, 0), striped_digits(32, 1)
    path = tmp_path / "classifier.pt"
    cached_classifier(path, train, test, 5, epochs=1, progress=False)
    state = load_checkpoint(path)
    save_checkpoint({**state, "model": {"head.9.weight": torch.zeros(3)}}, path)
    _, accuracy = cached_classifier(path, train, test, 5, epochs=1, progress=False)
    assert load_checkpoint(path)["model"].keys() == ImageClassifier((1, 20, 20), 5).state_dict().keys()
    assert 0 <= accuracy <= 1
