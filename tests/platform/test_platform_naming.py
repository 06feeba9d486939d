"""Deterministic resource names, run labels, backend choice and cluster configuration."""

import pytest

from dmlops.platform import label_value, resolve_backend, resource_name, run_labels
from dmlops.platform.kubernetes import current_namespace, load_cluster_config
from dmlops.platform.naming import is_dns1035_label

KFP_RUN_ID = "3f2a9c1e-5d1c-4b2a-9e7f-0c1d2e3f4a5b"


def test_same_run_and_task_give_the_same_name_and_others_differ():
    name = resource_name("train", KFP_RUN_ID, "train-model")
    assert name == resource_name("train", KFP_RUN_ID, "train-model")
    assert name.startswith("train-train-model-")
    others = {
        resource_name("train", "another-run", "train-model"),
        resource_name("train", KFP_RUN_ID, "train-model-2"),
        resource_name("tune", KFP_RUN_ID, "train-model"),
    }
    assert name not in others and len(others) == 3


@pytest.mark.parametrize(
    "prefix, task, max_length",
    [
        ("train", "Train_Model (GPU) #1", 40),
        ("PyTorch", "x" * 200, 63),
        ("isvc", "for-loop-2.iteration-item", 24),
        ("t", "", 12),
    ],
)
def test_names_are_dns1035_labels_within_the_length(prefix, task, max_length):
    name = resource_name(prefix, KFP_RUN_ID, task, max_length=max_length)
    assert is_dns1035_label(name), name
    assert len(name) <= max_length


def test_truncated_names_still_differ_by_task():
    long_task = "evaluate-the-candidate-model-against-the-champion"
    assert resource_name("train", KFP_RUN_ID, long_task + "-a") != resource_name("train", KFP_RUN_ID, long_task + "-b")


@pytest.mark.parametrize(
    "prefix, run_id, max_length, message",
    [
        ("9train", KFP_RUN_ID, 40, "must start with a letter"),
        ("train", "", 40, "needs the pipeline run id"),
        ("train", KFP_RUN_ID, 64, "between 1 and 63"),
        ("train", KFP_RUN_ID, 10, "no room for the prefix"),
    ],
)
def test_bad_name_inputs_are_refused(prefix, run_id, max_length, message):
    with pytest.raises(ValueError, match=message):
        resource_name(prefix, run_id, "task", max_length=max_length)


def test_labels_keep_valid_values_and_hash_invalid_ones():
    assert run_labels(KFP_RUN_ID, "train-model") == {"dmlops.io/run-id": KFP_RUN_ID, "dmlops.io/task": "train-model"}
    odd = label_value("runs/2026 11 27: " + "z" * 80)
    assert len(odd) <= 63 and odd == label_value("runs/2026 11 27: " + "z" * 80)
    assert odd != label_value("runs/2026 11 27: " + "z" * 81)
    assert odd[0].isalnum() and odd[-1].isalnum() and " " not in odd and "/" not in odd


def test_auto_backend_detects_the_in_cluster_service_account(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert resolve_backend("auto", tmp_path) == "local"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert resolve_backend("auto", tmp_path) == "local"  # no token mounted
    (tmp_path / "token").write_text("token")
    assert resolve_backend("auto", tmp_path) == "kubernetes"
    assert resolve_backend("local", tmp_path) == "local"
    with pytest.raises(ValueError, match="use one of: auto, local, kubernetes"):
        resolve_backend("k8s")


def test_namespace_comes_from_the_pod_else_the_kubeconfig(fake_kube, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="team-b")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert current_namespace(tmp_path) == "team-b"
    assert load_cluster_config().host == fake_kube.url
    (tmp_path / "namespace").write_text("team-c\n")
    assert current_namespace(tmp_path) == "team-c"


def test_missing_cluster_configuration_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(Exception, match="no Kubernetes configuration.*backend='local'"):
        load_cluster_config()
