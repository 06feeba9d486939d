"""Completion rules read the conditions each upstream controller writes."""

import pytest

from dmlops.platform import RULES, InvalidResource, rule_for


def resource(api_version, kind, *conditions, generation=1, **status):
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "job", "generation": generation},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": f"{t}Reason", "message": f"{t} message"} for t, s in conditions
            ],
            **status,
        },
    }


@pytest.mark.parametrize(
    "api_version, kind, done, failed",
    [
        ("trainer.kubeflow.org/v1alpha1", "TrainJob", "Complete", "Failed"),
        ("kubeflow.org/v1", "PyTorchJob", "Succeeded", "Failed"),
        ("kubeflow.org/v1", "TFJob", "Succeeded", "Failed"),
        ("kubeflow.org/v1", "MPIJob", "Succeeded", "Failed"),
        ("kubeflow.org/v2beta1", "MPIJob", "Succeeded", "Failed"),
        ("kubeflow.org/v1beta1", "Experiment", "Succeeded", "Failed"),
    ],
)
def test_job_rules(api_version, kind, done, failed):
    rule = rule_for({"apiVersion": api_version, "kind": kind})
    assert rule.outcome(resource(api_version, kind, ("Created", "True"), ("Running", "True"))) is None
    assert rule.outcome(resource(api_version, kind, (done, "False"))) is None
    success = rule.outcome(resource(api_version, kind, ("Running", "False"), (done, "True")))
    assert (success.succeeded, success.condition, success.reason) == (True, done, f"{done}Reason")
    failure = rule.outcome(resource(api_version, kind, (failed, "True"), (done, "True")))
    assert (failure.succeeded, failure.reason, failure.message) == (False, "FailedReason", "Failed message")


def test_inference_service_counts_only_the_observed_generation():
    rule = rule_for({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"})
    stale = resource(
        "serving.kserve.io/v1beta1", "InferenceService", ("Ready", "True"), generation=2, observedGeneration=1
    )
    assert rule.outcome(stale) is None
    current = resource(
        "serving.kserve.io/v1beta1", "InferenceService", ("Ready", "True"), generation=2, observedGeneration=2
    )
    assert rule.outcome(current).succeeded
    failed_load = resource(
        "serving.kserve.io/v1beta1",
        "InferenceService",
        ("Ready", "False"),
        generation=2,
        observedGeneration=2,
        modelStatus={
            "transitionStatus": "InvalidSpec",
            "lastFailureInfo": {"reason": "NoSupportingRuntime", "message": "no runtime for sklearn"},
        },
    )
    outcome = rule.outcome(failed_load)
    assert (outcome.succeeded, outcome.reason, outcome.message) == (
        False,
        "NoSupportingRuntime",
        "no runtime for sklearn",
    )


def test_log_selectors_name_the_primary_pod():
    selectors = {key: [selector.format(name="j") for selector in rule.log_pods] for key, rule in RULES.items()}
    assert selectors[("kubeflow.org/v1", "PyTorchJob")] == [
        "training.kubeflow.org/job-name=j,training.kubeflow.org/replica-type=master,training.kubeflow.org/replica-index=0"
    ]
    assert selectors[("kubeflow.org/v2beta1", "MPIJob")] == [
        "training.kubeflow.org/job-name=j,training.kubeflow.org/job-role=launcher"
    ]
    assert selectors[("trainer.kubeflow.org/v1alpha1", "TrainJob")][-1] == (
        "jobset.sigs.k8s.io/jobset-name=j,jobset.sigs.k8s.io/replicatedjob-name=node,batch.kubernetes.io/job-completion-index=0"
    )
    assert selectors[("kubeflow.org/v1beta1", "Experiment")] == []


def test_unknown_kinds_are_refused_with_the_known_ones_listed():
    with pytest.raises(InvalidResource, match=r"no completion rule for kind 'RayJob'.*PyTorchJob \(kubeflow.org/v1\)"):
        rule_for({"apiVersion": "ray.io/v1", "kind": "RayJob"})
