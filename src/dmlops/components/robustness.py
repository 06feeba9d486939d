"""A component that measures a model's robustness to bounded input perturbations and gates on it."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from dmlops.images import TORCH_IMAGE


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def robustness(
    model: Input[Model],
    eval_data: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    epsilon: float = 0.25,
    pgd_steps: int = 10,
    max_rows: int = 20000,
    max_accuracy_drop: float = 1.0,
):
    """Score a binary torch model under bounded perturbations: FGSM and PGD on the numeric features
    (within ``epsilon`` training standard deviations, kept inside the training range when the export
    records it) and random swaps of each categorical feature to another known category. Fails the step
    (a rollout gate) when the worst attack costs more accuracy than ``max_accuracy_drop``.

    Args:
        model: A model exported by ``train`` (binary task, torch).
        eval_data: Parquet dataset with the model's feature columns and its label column.
        metrics: Accuracy and AUC clean, under FGSM, under PGD and per swapped column, and accuracy_drop
            (clean minus the worst attack).
        report: The figures as a Markdown table.
        epsilon: The largest change of each numeric feature, in training standard deviations.
        pgd_steps: PGD iterations (step 2.5 * epsilon / pgd_steps).
        max_rows: Rows drawn from eval_data at most.
        max_accuracy_drop: The largest accuracy loss under the worst attack that passes; 1.0 never fails.
    """
    from dmlops.training.robustness import assess, gate

    result = assess(model.path, eval_data.path, epsilon=epsilon, pgd_steps=pgd_steps, max_rows=max_rows)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(result.markdown())
    print(result.markdown())
    gate(result, max_accuracy_drop)
