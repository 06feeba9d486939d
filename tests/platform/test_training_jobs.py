"""Training custom resources validate against the upstream CRDs and carry the requested placement."""

import copy

import pytest
from crds import assert_valid, crd_errors

from dmlops.platform import resource_name, run_labels
from dmlops.training.jobs import GPU_RESOURCE, Placement, mpi_job, pytorch_job, tf_job, train_job

NAME = resource_name("train", "run-42", "train-model")
COMMAND = ["python", "-m", "dmlops.training.worker"]
GPU_PLACEMENT = Placement(
    cpu="4",
    memory="16Gi",
    gpu=2,
    node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    service_account="dmlops-trainer",
    labels=run_labels("run-42", "train-model"),
)


def build_all(placement=GPU_PLACEMENT, workers=3):
    common = dict(
        image="ghcr.io/dmlops/torch-horovod:0.1.0",
        env={"EPOCHS": 3, "DATA": "gs://b/train.parquet"},
        workers=workers,
        placement=placement,
    )
    return {
        "TrainJob": train_job(NAME, "ml", command=COMMAND, args=["--epochs", "3"], procs_per_node=2, **common),
        "PyTorchJob": pytorch_job(NAME, "ml", command=COMMAND, args=["--epochs", "3"], **common),
        "TFJob": tf_job(NAME, "ml", command=COMMAND, **common),
        "MPIJob v2beta1": mpi_job(NAME, "ml", command=["mpirun", "-np", "6", *COMMAND], slots_per_worker=2, **common),
        "MPIJob v1": mpi_job(
            NAME, "ml", command=["mpirun", "-np", "6", *COMMAND], api_version="kubeflow.org/v1", **common
        ),
    }


@pytest.mark.parametrize("kind", list(build_all()))
@pytest.mark.parametrize(
    "placement, workers", [(GPU_PLACEMENT, 3), (Placement(), 1)], ids=["gpu-placement", "bare-single"]
)
def test_every_job_validates_against_its_crd(kind, placement, workers):
    assert_valid(build_all(placement, workers)[kind])


def pod_templates(job):
    spec = job["spec"]
    replicas = spec.get("pytorchReplicaSpecs") or spec.get("tfReplicaSpecs") or spec.get("mpiReplicaSpecs")
    return {role: replica["template"] for role, replica in replicas.items()}


def test_operator_v1_jobs_put_placement_on_every_training_pod():
    jobs = build_all()
    expected_roles = {
        "PyTorchJob": {"Master": 1, "Worker": 2},
        "TFJob": {"Chief": 1, "Worker": 2},
        "MPIJob v2beta1": {"Launcher": 1, "Worker": 3},
    }
    for kind, roles in expected_roles.items():
        job = jobs[kind]
        replicas = {
            role: spec["replicas"]
            for role, spec in (
                job["spec"].get("pytorchReplicaSpecs")
                or job["spec"].get("tfReplicaSpecs")
                or job["spec"]["mpiReplicaSpecs"]
            ).items()
        }
        assert replicas == roles, kind
        for role, template in pod_templates(job).items():
            pod = template["spec"]
            selector = None if role == "Launcher" else {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
            assert pod.get("nodeSelector") == selector  # the MPI launcher does not ask for a GPU node
            assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
            assert pod["serviceAccountName"] == "dmlops-trainer"
            assert template["metadata"]["labels"]["dmlops.io/run-id"] == "run-42"
            limits = pod["containers"][0]["resources"]["limits"]
            if role == "Launcher":
                assert GPU_RESOURCE not in limits and limits["cpu"] == "1"
            else:
                assert limits == {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "2"}
                assert pod["containers"][0]["resources"]["requests"] == limits
    assert pod_templates(jobs["PyTorchJob"])["Master"]["spec"]["containers"][0]["name"] == "pytorch"
    assert pod_templates(jobs["TFJob"])["Chief"]["spec"]["containers"][0]["name"] == "tensorflow"
    assert pod_templates(jobs["PyTorchJob"])["Worker"]["spec"]["containers"][0]["env"] == [
        {"name": "EPOCHS", "value": "3"},
        {"name": "DATA", "value": "gs://b/train.parquet"},
    ]
    mpi = pod_templates(jobs["MPIJob v2beta1"])
    assert mpi["Launcher"]["spec"]["containers"][0]["command"][:3] == ["mpirun", "-np", "6"]
    assert "command" not in mpi["Worker"]["spec"]["containers"][0]  # mpi-operator runs sshd there
    assert jobs["MPIJob v2beta1"]["spec"]["slotsPerWorker"] == 2


def test_single_worker_jobs_have_no_worker_replicas():
    jobs = build_all(Placement(), workers=1)
    assert list(jobs["PyTorchJob"]["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert list(jobs["TFJob"]["spec"]["tfReplicaSpecs"]) == ["Chief"]
    assert "labels" not in jobs["PyTorchJob"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]
    assert (
        "resources"
        not in jobs["PyTorchJob"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    )


def test_train_job_references_the_runtime_and_patches_node_placement():
    job = build_all()["TrainJob"]
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["trainer"]["numNodes"] == 3 and spec["trainer"]["numProcPerNode"] == 2
    assert spec["trainer"]["resourcesPerNode"]["limits"][GPU_RESOURCE] == "2"
    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "dmlops-trainer"
    assert pod["metadata"]["labels"]["dmlops.io/task"] == "train-model"
    assert job["metadata"]["labels"]["dmlops.io/run-id"] == "run-42"


def test_replicas_do_not_share_nested_dicts():
    job = build_all()["PyTorchJob"]
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"] != "changed"


@pytest.mark.parametrize("kind", ["TrainJob", "PyTorchJob", "MPIJob v2beta1"])
def test_the_validator_catches_a_typo_and_a_wrong_type(kind):
    job = copy.deepcopy(build_all()[kind])
    if kind == "TrainJob":
        job["spec"]["trainer"]["numNode"] = job["spec"]["trainer"].pop("numNodes")
        job["spec"]["trainer"]["numProcPerNode"] = "2"
        typo_path, type_path = "spec.trainer", "spec.trainer.numProcPerNode"
    else:
        template = pod_templates(job)["Worker"]
        template["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        job["spec"]["runPolicy"]["backoffLimit"] = "3"
        typo_path, type_path = "template.spec.containers.0", "spec.runPolicy.backoffLimit"
    errors = crd_errors(job)
    assert len(errors) == 2, errors
    assert any(typo_path in error and "was unexpected" in error for error in errors), errors
    assert any(error.startswith(type_path) and "is not of type 'integer'" in error for error in errors), errors


def test_the_validator_checks_metadata_like_the_api_server():
    job = build_all()["PyTorchJob"]
    job["metadata"]["labels"]["dmlops.io/run-id"] = "run id with spaces"
    job["metadata"]["name"] = "Train"
    assert crd_errors(job) == [
        "metadata.name: 'Train' is not a DNS-1123 subdomain",
        "metadata.labels['dmlops.io/run-id']: 'run id with spaces' is not a valid label value",
    ]


def test_katib_experiments_are_checked_against_the_katib_openapi_schema():
    experiment = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "tune-lr", "namespace": "ml"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "auc"},
            "algorithm": {"algorithmName": "tpe"},
            "maxTrialCount": 6,
            "parallelTrialCount": 2,
            "parameters": [{"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.001", "max": "0.1"}}],
        },
    }
    assert_valid(experiment)
    experiment["spec"]["objective"]["objectiveMetric"] = experiment["spec"]["objective"].pop("objectiveMetricName")
    experiment["spec"]["maxTrialCount"] = "6"
    errors = crd_errors(experiment)
    assert any(
        error.startswith("spec.objective") and "'objectiveMetric' was unexpected" in error for error in errors
    ), errors
    assert any(error.startswith("spec.maxTrialCount") for error in errors), errors


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "Train_Model"}, "not a DNS-1035 label"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"image": ""}, "image is empty"),
        ({"placement": Placement(gpu=-1)}, "gpu must be 0 or more"),
        ({"placement": Placement(tolerations=["nvidia.com/gpu"])}, "each toleration must be a mapping"),
    ],
)
def test_builders_refuse_bad_arguments_with_the_parameter_named(change, message):
    arguments = {"name": NAME, "image": "img", "workers": 2, "placement": Placement(), **change}
    with pytest.raises(ValueError, match=message):
        pytorch_job(arguments.pop("name"), "ml", command=COMMAND, **arguments)


def test_mpi_job_refuses_an_unknown_api_version():
    with pytest.raises(ValueError, match="kubeflow.org/v2beta1 .* or kubeflow.org/v1"):
        mpi_job(NAME, "ml", image="img", command=["mpirun"], api_version="kubeflow.org/v2")


def test_the_mpi_launcher_keeps_a_node_selector_when_the_workers_have_no_gpu():
    placement = Placement(node_selector={"topology.kubernetes.io/zone": "europe-west4-a"},
                          tolerations=[{"key": "dedicated", "operator": "Exists"}])
    launcher = pod_templates(build_all(placement)["MPIJob v2beta1"])["Launcher"]["spec"]
    assert launcher["nodeSelector"] == {"topology.kubernetes.io/zone": "europe-west4-a"}
    patched = train_job(NAME, "ml", image="img", command=COMMAND, placement=GPU_PLACEMENT,
                        patched_jobs=("node", "launcher"))
    jobs = patched["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pods = {job["name"]: job["template"]["spec"]["template"]["spec"] for job in jobs}
    assert "nodeSelector" not in pods["launcher"] and pods["node"]["nodeSelector"] == GPU_PLACEMENT.node_selector
    assert pods["launcher"]["tolerations"] == pods["node"]["tolerations"]
    assert_valid(patched)
