"""Where the ExitCode restart policy can live for a Trainer v2 TrainJob, read from the vendored CRDs.

PyTorchJob, TFJob and MPIJob carry ``restartPolicy: ExitCode`` per replica. A TrainJob cannot: neither its
spec nor its ``runtimePatches`` (which reach only the pod template's placement fields) has a Job's
``podFailurePolicy``, ``backoffLimit`` or the pod's ``restartPolicy``. Only the training runtime's JobSet
template has them, so the runtime decides: upstream ``torch-distributed`` (kubeflow/trainer
manifests/base/runtimes/torch_distributed.yaml) sets none, leaving JobSet's ``OnFailure`` and the Job's
default ``backoffLimit`` of 6, and a permanent error is retried until that limit.
"""

import yaml

from crds import CRDS

JOB_POLICY_FIELDS = {"podFailurePolicy", "backoffLimit", "restartPolicy"}


def schema(name: str) -> dict:
    document = yaml.safe_load((CRDS / "trainer-v2" / name).read_text())
    return document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def field_paths(node: dict, path: str = "") -> set[str]:
    """Every property path under ``node`` (``a.b[].c``)."""
    paths = set()
    for name, child in (node.get("properties") or {}).items():
        paths |= {f"{path}.{name}"} | field_paths(child, f"{path}.{name}")
    if "items" in node:
        paths |= field_paths(node["items"], f"{path}[]")
    return paths


def test_a_trainjob_has_no_field_for_a_pod_failure_policy_and_its_runtime_has():
    trainjob = field_paths(schema("trainer.kubeflow.org_trainjobs.yaml"))
    assert not {path for path in trainjob if path.rsplit(".", 1)[-1] in JOB_POLICY_FIELDS}
    job_patch = ".runtimePatches[].trainingRuntimeSpec.template.spec.replicatedJobs[].template.spec"
    assert {path.removeprefix(job_patch + ".") for path in trainjob
            if path.startswith(job_patch + ".") and path.count(".") == job_patch.count(".") + 1} == {"template"}

    runtime_job = ".template.spec.replicatedJobs[].template.spec"
    runtime = field_paths(schema("trainer.kubeflow.org_trainingruntimes.yaml"))
    assert {f"{runtime_job}.podFailurePolicy.rules[].onExitCodes.values", f"{runtime_job}.backoffLimit",
            f"{runtime_job}.template.spec.restartPolicy"} <= runtime
