"""Katib Experiment dicts: every trial kind validates against Katib's schema (and its job against its CRD),
and trial parameters substitute the way Katib substitutes them."""

import copy

import pytest

from crds import assert_valid, crd_errors
from dmlops.tuning import MetricsCollector, SpecError, TuningSpec, build_experiment, substitute_trial_parameters, trial_job
from dmlops.tuning.experiment import flag_arguments, primary_container, shell_words

SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc", "goal": 0.9, "additionalMetricNames": ["accuracy"]},
    "algorithm": {"algorithmName": "tpe", "algorithmSettings": [{"name": "random_state", "value": "7"}]},
    "parallelTrialCount": 2,
    "maxTrialCount": 6,
    "maxFailedTrialCount": 2,
    "resumePolicy": "LongRunning",
    "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "1"}]},
    "parameters": [
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": "0.0001", "max": "0.1", "distribution": "logUniform"}},
        {"name": "batch_size", "parameterType": "int", "feasibleSpace": {"min": "64", "max": "512", "step": "64"}},
        {"name": "hidden_units", "parameterType": "categorical", "feasibleSpace": {"list": ["32", "64,32"]}},
        {"name": "dropout", "parameterType": "discrete", "feasibleSpace": {"list": ["0", "0.1", "0.2"]}},
    ],
}
BASE_ARGS = ["--train-uri", "gs://bucket/train", "--label", "label", "--export-uri", "gs://bucket/trials/x",
             "--learning-rate", "0.001"]
TRIAL_PARAMETERS = {"learning_rate": "learning_rate", "batch_size": "batch_size", "hidden_units": "hidden_units",
                    "dropout": "dropout"}


def worker_command() -> list[str]:
    args = flag_arguments(BASE_ARGS, TRIAL_PARAMETERS)
    args[args.index("gs://bucket/trials/x")] = "gs://bucket/trials/${trialParameters.trialName}"
    return ["python", "-m", "dmlops.training.worker", *args]


def experiment(kind: str, workers: int, collector: MetricsCollector = MetricsCollector()) -> dict:
    template = trial_job(kind, "ghcr.io/dmlops/torch-horovod:0.1.0", worker_command(), workers, gpu=1,
                         references={"trialName": "${trialSpec.Name}"})
    return build_experiment(TuningSpec.from_katib(SEARCH), "tune-flights", "kubeflow", template, collector=collector,
                            labels={"dmlops.io/task": "tune"})


@pytest.mark.parametrize("kind,workers", [("Job", 1), ("PyTorchJob", 2), ("TFJob", 2), ("MPIJob", 2)])
def test_each_trial_kind_validates_against_katib_and_its_crd(kind, workers):
    built = experiment(kind, workers)
    assert_valid(built)
    template = built["spec"]["trialTemplate"]
    assert template["trialSpec"]["kind"] == kind
    assert template["successCondition"] and template["failureCondition"]
    trial = substitute_trial_parameters(built, {"learning_rate": "0.01", "batch_size": "128",
                                                "hidden_units": "64,32", "dropout": "0.1"}, "tune-flights-abc")
    if kind != "Job":  # batch/v1 Job has no CRD; its pod spec is checked by Katib's webhook on the cluster
        assert_valid({**trial, "metadata": {"name": "tune-flights-abc", "namespace": "kubeflow"}})
    assert "${" not in str(trial)
    command = shell_words(primary_container({"spec": {"trialTemplate": {**template, "trialSpec": trial}}})["command"])
    assert command[command.index("--export-uri") + 1] == "gs://bucket/trials/tune-flights-abc"
    assert command[command.index("--learning-rate") + 1] == "0.01"


def test_spec_round_trips_through_katib_fields():
    spec = TuningSpec.from_katib(SEARCH)
    assert TuningSpec.from_katib(spec.to_katib()) == spec
    assert spec.parameter("batch_size").cast("128") == 128
    assert spec.parameter("dropout").values == (0, 0.1, 0.2)
    assert spec.objective.strategy("auc") == "max" and spec.early_stopping.start_step == 1


def test_file_collector_and_filter_validate():
    built = experiment("PyTorchJob", 2, MetricsCollector(kind="File", path="/var/log/katib/metrics.log",
                                                         metrics_format=(r"([\w-]+)=([\d.]+)",)))
    assert_valid(built)
    assert built["spec"]["metricsCollectorSpec"]["source"]["fileSystemPath"]["path"] == "/var/log/katib/metrics.log"


def test_validator_catches_a_misspelt_katib_field():
    built = copy.deepcopy(experiment("Job", 1))
    built["spec"]["objective"]["objectiveMetric"] = built["spec"]["objective"].pop("objectiveMetricName")
    assert any("objectiveMetric" in error for error in crd_errors(built))


@pytest.mark.parametrize("change,message", [
    (lambda s: s["parameters"][0]["feasibleSpace"].update(min="0.5"), "must be below max"),
    (lambda s: s["parameters"][1].update(parameterType="float"), "parameterType 'float' is unknown"),
    (lambda s: s["algorithm"].update(algorithmName="annealing"), "not a Katib algorithm"),
    (lambda s: s["earlyStopping"]["algorithmSettings"].append({"name": "min_step", "value": "1"}), "min_step"),
    (lambda s: s.update(resumePolicy="Sometimes"), "resumePolicy"),
    (lambda s: s["parameters"][0]["feasibleSpace"].update(min="0"), "needs min > 0"),
])
def test_bad_specs_name_the_field(change, message):
    search = copy.deepcopy(SEARCH)
    change(search)
    with pytest.raises(SpecError, match=message):
        TuningSpec.from_katib(search)


@pytest.mark.parametrize("change,message", [
    ({"maxTrialCount": 2, "maxFailedTrialCount": 3, "parallelTrialCount": 1},
     r"spec.maxFailedTrialCount \(3\) must not exceed spec.maxTrialCount \(2\)"),
    ({"maxTrialCount": 2, "parallelTrialCount": None, "maxFailedTrialCount": 0},
     r"spec.parallelTrialCount \(3, Katib's default when unset is 3\) must not exceed spec.maxTrialCount \(2\)"),
    ({"parallelTrialCount": 0}, r"spec.parallelTrialCount must be at least 1, got 0"),
])
def test_trial_counts_katibs_validator_refuses_are_refused_naming_the_field(change, message):
    """katib pkg/webhook/v1beta1/experiment/validator/validator.go, ValidateExperiment."""
    search = {key: value for key, value in {**SEARCH, **change}.items() if value is not None}
    with pytest.raises(SpecError, match=message):
        TuningSpec.from_katib(search)


@pytest.mark.parametrize("collector,message", [
    (dict(kind="File", file_format="JSON", metrics_format=(r"(\w+)=(\d+)",)),
     "filter must be empty when fileSystemPath.format is JSON"),
    (dict(metrics_format=(r"auc=([\d.]+)",)), r"metricsFormat 'auc=.*' needs two groups, the metric's name and its value"),
    (dict(metrics_format=(r"(\w+=([\d.]+)",)), "metricsFormat .*missing \\)"),
])
def test_metrics_collectors_katibs_validator_refuses_are_refused_naming_the_field(collector, message):
    with pytest.raises(SpecError, match=message):
        experiment("PyTorchJob", 2, MetricsCollector(**collector))


def test_experiment_names_katib_refuses_are_refused():
    template = trial_job("Job", "image", ["python", "train.py", "--lr", "${trialParameters.learning_rate}"])
    search = {**SEARCH, "parameters": SEARCH["parameters"][:1]}
    for name in ("tune-flights-" + "x" * 28, "Tune", "tune-"):
        with pytest.raises(SpecError, match=f"metadata.name '{name}': Katib takes lower-case"):
            build_experiment(TuningSpec.from_katib(search), name, "kubeflow", template)
    twice = trial_job("Job", "image", ["python", "train.py", "--lr", "${trialParameters.lr}",
                                       "--rate", "${trialParameters.rate}"],
                      references={"lr": "learning_rate", "rate": "learning_rate"})
    with pytest.raises(SpecError, match=r"references \['learning_rate'\] are used twice"):
        build_experiment(TuningSpec.from_katib(search), "tune", "kubeflow", twice)


def test_placeholder_without_trial_parameter_is_refused():
    template = trial_job("Job", "image", ["python", "train.py", "--lr", "${trialParameters.lr}"])
    with pytest.raises(SpecError, match=r"reach no trial|neither a spec parameter"):
        build_experiment(TuningSpec.from_katib(SEARCH), "tune", "kubeflow", template)
