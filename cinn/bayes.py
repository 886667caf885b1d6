r"""A class-conditional density model as a classifier, by Bayes' rule.

With equal class priors ``p(y) = 1/K``, the posterior of class ``y`` given an image ``x`` is
``p(y | x) = p(x | y) / Σ_k p(x | k)``, so the classifier is ``ŷ(x) = argmax_y log p(x | y)``: one likelihood per
class, all on the same dequantised ``x`` (the dequantisation constant is the same for every class and cancels).
Its test accuracy is an honest figure of how much of the class a generative model has learned (TarFlow reports it
for its MNIST model; Fetaya et al. 2020 discuss what such classifiers get right and wrong).

Example (a "model" whose density of ``x`` under class ``k`` is a unit Gaussian at ``k``):
    >>> class Toy:
    ...     def log_prob(self, x, c):
    ...         return -0.5 * (x.flatten(1).mean(1) - c.double()) ** 2
    >>> x, labels = torch.tensor([[0.1], [0.9], [2.2]], dtype=torch.float64), torch.tensor([0, 1, 1])
    >>> class_log_likelihoods(Toy(), x, n_classes=3).argmax(1).tolist()
    [0, 1, 2]
    >>> bayes_rule_accuracy(Toy(), [(x, labels)], n_classes=3).accuracy
    0.6666666666666666
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class ClassConditionalModel(Protocol):
    """Anything with ``log_prob(x, c)``, ``c`` the labels ``(B,)`` (int64): a class-conditional cINN or Glow."""

    def log_prob(self, x: Tensor, c: Tensor) -> Tensor: ...


@torch.no_grad()
def class_log_likelihoods(model: ClassConditionalModel, x: Tensor, n_classes: int) -> Tensor:
    """``log p(x | y = k)`` for every image of ``x`` ``(B, ...)`` and every class ``k``: ``(B, n_classes)``, in the
    model's units (nats of its continuous density)."""
    return torch.stack([model.log_prob(x, torch.full((len(x),), k, dtype=torch.int64, device=x.device))
                        for k in range(n_classes)], dim=1)


@dataclass(frozen=True)
class BayesAccuracy:
    """The fraction of images whose ``argmax_y log p(x | y)`` is their label, with its binomial standard error,
    over ``count`` images; ``per_class[k]`` is the fraction among images of class ``k`` (NaN for a class with
    none)."""

    accuracy: float
    standard_error: float
    count: int
    per_class: tuple[float, ...]

    def summary(self) -> str:
        return f"{self.accuracy:.1%} ± {self.standard_error:.1%} of {self.count} images"


def bayes_rule_accuracy(model: ClassConditionalModel, batches: Iterable[tuple[Tensor, Tensor]],
                        n_classes: int) -> BayesAccuracy:
    """The accuracy of Bayes' rule with equal priors, ``argmax_y log p(x | y)``, over ``batches`` of model inputs
    ``x`` with their labels ``(B,)``; ``n_classes`` likelihoods per image."""
    correct, labels = [], []
    for x, label in batches:
        correct.append(class_log_likelihoods(model, x, n_classes).argmax(1).cpu() == label.cpu())
        labels.append(label.cpu())
    hits, truth = torch.cat(correct).double(), torch.cat(labels)
    accuracy, count = hits.mean().item(), len(hits)
    per_class = tuple(hits[truth == k].mean().item() if (truth == k).any() else math.nan for k in range(n_classes))
    return BayesAccuracy(accuracy, math.sqrt(accuracy * (1 - accuracy) / count), count, per_class)
