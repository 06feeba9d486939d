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


ISVC = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}


def isvc(storage_uri, mode=None, canary=None, predictor_status=None, generation=1):
    annotations = {"serving.kserve.io/deploymentMode": mode} if mode else {}
    predictor = {"model": {"storageUri": storage_uri}}
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return {**ISVC, "metadata": {"name": "m", "generation": generation, "annotations": annotations},
            "spec": {"predictor": predictor},
            "status": {"observedGeneration": 9, "components": {"predictor": predictor_status or {}}}}


def revisions(created, ready, *traffic):
    return {"latestCreatedRevision": created, "latestReadyRevision": ready,
            "traffic": [{"revisionName": name, "percent": share, "latestRevision": name == created}
                        for name, share in traffic]}


def test_inference_service_rollout_follows_the_deployment_mode():
    rule = rule_for(ISVC)
    assert rule.rollout(isvc("s3://a")) is rule.rollout(isvc("s3://a", mode="Knative"))
    assert rule.rollout(isvc("s3://a", mode="RawDeployment")) is rule.rollout(isvc("s3://a", mode="Standard"))
    assert rule.rollout(isvc("s3://a")) != rule.rollout(isvc("s3://a", mode="Standard"))
    assert rule_for({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob"}).rollout(isvc("s3://a")) is None


def test_knative_rollout_waits_for_a_new_ready_revision_with_the_traffic_asked():
    rollout = rule_for(ISVC).rollout(isvc("s3://a"))
    before = isvc("s3://a", predictor_status=revisions("m-1", "m-1", ("m-1", 100)))
    stale = isvc("s3://b", predictor_status=revisions("m-1", "m-1", ("m-1", 100)), generation=2)
    assert rollout.pending(before, stale) == "a new revision (latest is still m-1)"
    creating = isvc("s3://b", predictor_status=revisions("m-2", "m-1", ("m-1", 100)), generation=2)
    assert rollout.pending(before, creating) == "revision m-2 to be ready (latest ready: m-1)"
    assert rollout.pending(before, isvc("s3://b", predictor_status=revisions("m-2", "m-2", ("m-2", 100)))) is None
    canary = isvc("s3://b", canary=10, predictor_status=revisions("m-2", "m-2", ("m-2", 100)))
    assert rollout.pending(before, canary) == "10% of the traffic on revision m-2 (now 100%)"
    split = isvc("s3://b", canary=10, predictor_status=revisions("m-2", "m-2", ("m-2", 10), ("m-1", 90)))
    assert rollout.pending(before, split) is None
    # a change of the traffic split alone makes no new revision
    promoted = isvc("s3://b", predictor_status=revisions("m-2", "m-2", ("m-2", 100)))
    assert rollout.pending(split, promoted) is None
    assert rollout.pending(None, isvc("s3://a")) == "a first revision"
    assert not rollout.updated(before, stale)
    assert rollout.updated(before, creating) and rollout.updated(split, promoted) and rollout.updated(None, stale)


def test_standard_rollout_waits_for_the_deployment_to_be_updated_and_rolled_out():
    rollout = rule_for(ISVC).rollout(isvc("s3://a", mode="Standard"))
    assert rollout.name_format.format(name="m") == "m-predictor"

    def deployment(generation, observed, replicas, updated, available, desired=1):
        return {"metadata": {"generation": generation}, "spec": {"replicas": desired},
                "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                           "availableReplicas": available}}

    before, after = isvc("s3://a", mode="Standard"), isvc("s3://b", mode="Standard", generation=2)
    old = deployment(3, 3, 1, 1, 1)
    assert rollout.pending(before, after, old, old) == "its Deployment to be updated"
    assert rollout.pending(before, after, deployment(4, 3, 1, 1, 1), old) == (
        "the Deployment's controller to see the update")
    assert rollout.pending(before, after, deployment(4, 4, 2, 1, 1), old) == "1 of 1 pods updated, 2 running"
    assert rollout.pending(before, after, deployment(4, 4, 1, 1, 0), old) == "0 of 1 updated pods available"
    assert rollout.pending(before, after, deployment(4, 4, 1, 1, 1), old) is None
    assert rollout.pending(before, before, old, old) is None  # nothing changed: nothing to roll out
    assert rollout.pending(None, before, None, None) == "its Deployment"
    assert not rollout.updated(before, after, old, old)
    assert rollout.updated(before, after, deployment(4, 3, 1, 1, 1), old) and rollout.updated(before, before, old, old)


def test_inference_service_failure_to_load_ends_the_wait():
    rule = rule_for(ISVC)
    failed_load = resource(
        "serving.kserve.io/v1beta1",
        "InferenceService",
        ("Ready", "False"),
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
