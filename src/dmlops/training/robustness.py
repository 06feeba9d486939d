"""How a binary tabular model holds up under bounded perturbations of its inputs.

Numeric features are attacked in the model's standardised input space, so ``epsilon`` is a share of each
feature's training standard deviation: FGSM (one step along the sign of the loss gradient; Goodfellow et
al., 2015) and PGD (``pgd_steps`` steps of ``2.5 * epsilon / pgd_steps``, projected back into the
L-infinity ball; Madry et al., 2018). With the export's ``feature_domain``, perturbed values are also
kept inside the training range (what the predictor's ``clip`` policy would serve). ``random`` moves each
numeric feature by ``epsilon`` in a random direction: the yardstick an attack is compared with. Categorical features
are swapped one column at a time for another known category, drawn at random. The report compares the
accuracy and AUC on the clean rows with each attack's; ``accuracy_drop`` (clean minus the worst attack)
is what a gate reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from dmlops.training.data import load_encoded
from dmlops.training.evaluate import ExportedModel


class RobustnessGateFailed(RuntimeError):
    """The model lost more accuracy under attack than the gate allows."""


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positives = labels == 1
    count_pos, count_neg = int(positives.sum()), int((~positives).sum())
    if not count_pos or not count_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - count_pos * (count_pos + 1) / 2) / (count_pos * count_neg))


@dataclass
class RobustnessReport:
    """Accuracy and AUC, clean and under each attack, on ``rows`` rows."""

    rows: int
    epsilon: float
    pgd_steps: int
    clean: dict[str, float]
    random: dict[str, float]
    fgsm: dict[str, float]
    pgd: dict[str, float]
    category_swaps: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, dict[str, float]]:
        attacks = {"fgsm": self.fgsm, "pgd": self.pgd, **{f"swap {name}": value for name, value in self.category_swaps.items()}}
        return min(attacks.items(), key=lambda item: item[1]["accuracy"])

    @property
    def accuracy_drop(self) -> float:
        return self.clean["accuracy"] - self.worst[1]["accuracy"]

    def metrics(self) -> dict[str, float]:
        """Flat figures for a KFP Metrics artifact."""
        figures = {f"{attack}_{name}": value for attack in ("clean", "random", "fgsm", "pgd")
                   for name, value in getattr(self, attack).items()}
        figures.update({f"swap_{column}_accuracy": value["accuracy"] for column, value in self.category_swaps.items()})
        return {**figures, "accuracy_drop": self.accuracy_drop}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop, "worst_attack": self.worst[0]}

    def markdown(self) -> str:
        lines = [f"# Robustness on {self.rows} rows", "",
                 f"Numeric features within ±{self.epsilon} training std (PGD: {self.pgd_steps} steps); "
                 f"categories swapped one column at a time. Worst: **{self.worst[0]}**, accuracy "
                 f"{self.accuracy_drop:+.4f} below clean.", "", "| inputs | accuracy | AUC |", "| --- | ---: | ---: |"]
        rows = [("clean", self.clean), ("random ±epsilon", self.random), ("FGSM", self.fgsm), ("PGD", self.pgd),
                *((f"swap {name}", value) for name, value in self.category_swaps.items())]
        lines += [f"| {name} | {value['accuracy']:.4f} | {value['auc']:.4f} |" for name, value in rows]
        return "\n".join(lines) + "\n"


def assess(
    model_uri: str, data_uri: str, *, epsilon: float = 0.25, pgd_steps: int = 10, max_rows: int = 20000,
    seed: int = 0,
) -> RobustnessReport:
    """The robustness of the binary torch model at ``model_uri`` on the labelled Parquet split at ``data_uri``
    (at most ``max_rows`` rows, drawn with ``seed``)."""
    import torch

    model = ExportedModel(model_uri)
    if model.metadata.get("framework") != "torch" or model.target.task != "binary":
        raise ValueError(f"{model_uri}: robustness is measured for binary torch models, not "
                         f"{model.target.task} {model.metadata.get('framework')} ones")
    module = torch.export.load(str(model.directory / model.metadata["model_files"]["torch_export"])).module()
    data = load_encoded(data_uri, model.preprocessing)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(data), size=min(max_rows, len(data)), replace=False))
    numeric = torch.from_numpy(data.numeric[chosen])
    categorical = torch.from_numpy(data.categorical[chosen])
    labels = torch.from_numpy(data.labels[chosen].astype(np.float32))
    lower, upper = _standardised_bounds(model.metadata, model.preprocessing, numeric.shape[1])

    def figures(x: torch.Tensor, codes: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            scores = torch.sigmoid(module(x, codes).reshape(-1)).double().numpy()
        truth = labels.numpy()
        return {"accuracy": float(((scores >= 0.5) == (truth == 1)).mean()), "auc": _auc(truth, scores)}

    def gradient_sign(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(x, categorical).reshape(-1), labels)
        (grad,) = torch.autograd.grad(loss, x)
        return grad.sign()

    def project(x: torch.Tensor) -> torch.Tensor:
        x = torch.max(torch.min(x, numeric + epsilon), numeric - epsilon)
        return torch.max(torch.min(x, upper), lower)

    signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=tuple(numeric.shape)).astype(np.float32))
    noise = project(numeric + epsilon * signs)
    fgsm = project(numeric + epsilon * gradient_sign(numeric))
    pgd, step = numeric.clone(), 2.5 * epsilon / max(pgd_steps, 1)
    for _ in range(pgd_steps):
        pgd = project(pgd + step * gradient_sign(pgd))
    swaps = {}
    for index, (name, vocabulary) in enumerate(model.preprocessing.categorical.items()):
        if len(vocabulary) < 2:
            continue
        swapped = categorical.clone()
        # another known category: a random shift of the 1-based index within 1..len(vocabulary)
        shift = torch.from_numpy(rng.integers(1, len(vocabulary), size=len(chosen)))
        known = swapped[:, index].clamp(min=1)
        swapped[:, index] = (known - 1 + shift) % len(vocabulary) + 1
        swaps[name] = figures(numeric, swapped)
    return RobustnessReport(len(chosen), epsilon, pgd_steps, figures(numeric, categorical), figures(noise, categorical),
                            figures(fgsm, categorical), figures(pgd, categorical), swaps)


def _standardised_bounds(metadata: dict[str, Any], preprocessing, width: int):
    """The training range of each numeric feature in standardised units (unbounded without a domain)."""
    import torch

    lower, upper = torch.full((width,), -torch.inf), torch.full((width,), torch.inf)
    domain = metadata.get("feature_domain") or {}
    for index, (name, stats) in enumerate(preprocessing.numeric.items()):
        entry = domain.get(name) or {}
        if entry.get("min") is not None:
            lower[index] = (entry["min"] - stats["mean"]) / stats["std"]
            upper[index] = (entry["max"] - stats["mean"]) / stats["std"]
    return lower, upper


def gate(report: RobustnessReport, max_accuracy_drop: float) -> None:
    """Raise RobustnessGateFailed when the worst attack costs more than ``max_accuracy_drop`` accuracy."""
    if report.accuracy_drop > max_accuracy_drop:
        raise RobustnessGateFailed(
            f"accuracy drops by {report.accuracy_drop:.4f} under {report.worst[0]} (epsilon {report.epsilon}), "
            f"more than max_accuracy_drop={max_accuracy_drop}"
        )
