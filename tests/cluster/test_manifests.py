"""The kustomize base and overlays in manifests/: rendered with ``kubectl kustomize`` (kustomize built into
kubectl), every object validated against its schema: the Kubernetes OpenAPI schemas for built-in kinds
(kubernetes-validate, strict), the upstream CRDs in crds/ for KServe and Feast kinds (tests/crds.py).
PrometheusRule has no CRD there; tests/cluster/test_monitoring.py checks it with promtool.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from crds import crd_errors
from dmlops.images import DEFAULT_REGISTRY, IMAGE_FAMILIES
from dmlops import __version__
from dmlops.platform.storage import MINIO_ENDPOINT
from dmlops.serving import packaging
from dmlops.serving.__main__ import build_parser
from image_imports import REPO
from istio_authz import Request, decide

MANIFESTS = REPO / "manifests"
KUSTOMIZATIONS = {
    "cluster": MANIFESTS / "cluster",
    "standalone": MANIFESTS / "overlays" / "standalone",
    "multi-user": MANIFESTS / "overlays" / "multi-user",
    "mlflow": MANIFESTS / "mlflow",
    "spark": MANIFESTS / "spark",
    "logging": MANIFESTS / "logging",
}
OVERLAY_NAMESPACE = {"standalone": "kubeflow", "multi-user": "kubeflow-user-example-com"}
OVERLAY_SERVICE_ACCOUNT = {"standalone": "pipeline-runner", "multi-user": "default-editor"}
KUBERNETES_VERSION = "1.32.0"
CLUSTER_SCOPED = {"ClusterServingRuntime"}
NO_SCHEMA_HERE = {"PrometheusRule"}  # checked in test_monitoring.py


def render(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (kustomize) is not installed: apt-get install kubectl")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {folder.relative_to(REPO)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(folder) for name, folder in KUSTOMIZATIONS.items()}


def schema_errors(obj: dict) -> list[str]:
    """Errors of ``obj`` against its schema; built-in kinds via kubernetes-validate."""
    group = obj["apiVersion"].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        return crd_errors(obj)
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_rendered_object_validates_against_its_schema(rendered, name):
    objects = rendered[name]
    assert objects, f"{name} renders nothing"
    for obj in objects:
        if obj["kind"] in NO_SCHEMA_HERE:
            continue
        errors = schema_errors(obj)
        assert not errors, f"{name}: {obj['kind']} {obj['metadata']['name']}: {errors}"


def test_validation_catches_a_wrong_field(rendered):
    """The validators used above reject a typo in a built-in kind and in a custom resource."""
    pvc = next(o for o in rendered["standalone"] if o["kind"] == "PersistentVolumeClaim")
    broken_pvc = {**pvc, "spec": {**pvc["spec"], "accesModes": pvc["spec"]["accessModes"]}}
    assert schema_errors(broken_pvc)
    runtime = next(o for o in rendered["cluster"] if o["kind"] == "ClusterServingRuntime")
    broken_runtime = {**runtime, "spec": {**runtime["spec"], "protocolVersion": ["v1"]}}
    assert schema_errors(broken_runtime)
    policy = next(o for o in rendered["multi-user"] if o["kind"] == "AuthorizationPolicy")
    assert not schema_errors(policy)
    broken_policy = {**policy, "spec": {**policy["spec"], "actions": policy["spec"]["action"]}}
    assert any("actions" in error for error in schema_errors(broken_policy))
    assert schema_errors({**policy, "spec": {**policy["spec"], "action": "PERMIT"}})


@pytest.mark.parametrize("overlay", sorted(OVERLAY_NAMESPACE))
def test_overlay_puts_everything_in_its_namespace_and_binds_its_service_account(rendered, overlay):
    objects = rendered[overlay]
    namespace = OVERLAY_NAMESPACE[overlay]
    for obj in objects:
        assert obj["kind"] not in CLUSTER_SCOPED, f"{overlay}: cluster-scoped {obj['kind']} belongs in manifests/cluster"
        assert obj["metadata"].get("namespace") == namespace, f"{overlay}: {obj['kind']} {obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dmlops"
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OVERLAY_SERVICE_ACCOUNT[overlay], "namespace": namespace}
    ]
    kinds = sorted(o["kind"] for o in objects)
    inference_auth = ["AuthorizationPolicy", "AuthorizationPolicy", "RequestAuthentication"] if overlay == "multi-user" else []
    assert kinds == sorted(["Role", "RoleBinding", "PersistentVolumeClaim", "PrometheusRule", "PrometheusRule",
                            "ConfigMap", "FeatureStore", "ServiceAccount", "Secret", *inference_auth]), kinds


@pytest.mark.parametrize("overlay", sorted(OVERLAY_NAMESPACE))
def test_kserve_reads_kfps_artifact_store_with_the_model_reader(rendered, overlay):
    """The ServiceAccount the deploy step gives a predictor of a minio:// model lists a Secret with what
    KServe's credential builder reads (kserve pkg/credentials/service_account_credentials.go: the Secrets
    the ServiceAccount lists; pkg/credentials/s3/s3_secret.go and utils.go: keys named by the default
    inferenceservice-config, endpoint settings from the Secret's annotations), pointing at KFP's store."""
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered[overlay]}
    reader = objects[("ServiceAccount", packaging.KFP_ARTIFACT_READER)]
    ((secret_name,),) = [tuple(ref.values()) for ref in reader["secrets"]]
    secret = objects[("Secret", secret_name)]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    annotations = secret["metadata"]["annotations"]
    endpoint = urlsplit(MINIO_ENDPOINT)
    assert annotations["serving.kserve.io/s3-endpoint"] == endpoint.netloc  # host:port, no scheme
    assert annotations["serving.kserve.io/s3-usehttps"] == ("1" if endpoint.scheme == "https" else "0")
    assert {"serving.kserve.io/s3-verifyssl", "serving.kserve.io/s3-region"} <= set(annotations)
    assert packaging.kserve_storage("minio://mlpipeline/v2/artifacts/m") == ("s3://mlpipeline/v2/artifacts/m",
                                                                            reader["metadata"]["name"])


def test_base_includes_the_feature_store(rendered):
    stores = [o for o in rendered["standalone"] if o["kind"] == "FeatureStore"]
    expected = [d for f in sorted((MANIFESTS / "feature-store").glob("*.yaml")) if f.name != "kustomization.yaml"
                for d in yaml.safe_load_all(f.read_text()) if d]
    assert [s["metadata"]["name"] for s in stores] == [d["metadata"]["name"] for d in expected]


def test_cluster_kustomization_is_cluster_scoped_only(rendered):
    for obj in rendered["cluster"]:
        assert obj["kind"] in CLUSTER_SCOPED and "namespace" not in obj["metadata"]


def test_checkpoint_volume_is_shared_by_the_workers(rendered):
    (pvc,) = [o for o in rendered["standalone"] if o["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_grafana_dashboard_is_shipped_to_the_sidecar(rendered):
    (config_map,) = [o for o in rendered["standalone"] if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"]["dmlops-serving.json"] == (MANIFESTS / "base" / "grafana-dashboard.json").read_text()
    assert config_map["data"]["dmlops-monitoring.json"] == \
        (MANIFESTS / "base" / "grafana-monitoring-dashboard.json").read_text()


class TestClusterServingRuntime:
    @pytest.fixture
    def runtime(self, rendered):
        (runtime,) = [o for o in rendered["cluster"] if o["kind"] == "ClusterServingRuntime"]
        return runtime

    def test_is_what_the_deploy_step_asks_for(self, runtime):
        assert runtime["metadata"]["name"] == packaging.DMLOPS_RUNTIME
        formats = [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
        assert formats == [packaging.DMLOPS_MODEL_FORMAT]
        assert runtime["spec"]["protocolVersions"] == ["v1", "v2"]

    def test_runs_the_dmlops_predictor_of_this_version(self, runtime):
        (container,) = runtime["spec"]["containers"]
        assert container["name"] == "kserve-container"
        assert container["image"] == f"{DEFAULT_REGISTRY}/serve:{__version__}"
        assert "serve" in IMAGE_FAMILIES
        assert container["command"] == ["python", "-m", "dmlops.serving"]
        # The predictor's own argument parser accepts the runtime's arguments (KServe fills in {{.Name}}).
        args = build_parser().parse_args([a.replace("{{.Name}}", "flights") for a in container["args"]])
        assert (args.model_name, args.model_dir, args.http_port) == ("flights", "/mnt/models", packaging.DMLOPS_HTTP_PORT)
        assert args.enable_grpc is False, "kserve.ModelServer starts an unused gRPC server unless --enable_grpc=false"
        assert sorted(container["args"]) == sorted(packaging.serving_runtime_container()["args"])
        assert container["ports"][0]["containerPort"] == packaging.DMLOPS_HTTP_PORT
        assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(packaging.DMLOPS_HTTP_PORT)

    def test_serves_the_inference_services_the_deploy_step_builds(self, runtime):
        """KServe picks a runtime by name, model format and protocol: all three match."""
        for protocol in ("v1", "v2"):
            service = packaging.inference_service("flights", "kubeflow", "gs://bucket/model", protocol=protocol)
            model = service["spec"]["predictor"]["model"]
            assert model["runtime"] == runtime["metadata"]["name"]
            assert model["modelFormat"]["name"] in [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
            assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
            assert service["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"

    def test_runs_as_the_images_non_root_user(self, runtime):
        (container,) = runtime["spec"]["containers"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
        assert security["allowPrivilegeEscalation"] is False
        dockerfile = (REPO / "containers" / "serve" / "Dockerfile").read_text()
        assert "USER 1000" in dockerfile and "--uid 1000" in dockerfile


class TestInferenceAuth:
    """The multi-user overlay's Istio policies, evaluated as a predictor pod's sidecar would
    (tests/cluster/istio_authz.py) for the requests a profile namespace sees."""

    NAMESPACE = OVERLAY_NAMESPACE["multi-user"]
    # KServe labels predictor pods component=predictor (kserve pkg/constants/constants.go KServiceComponentLabel)
    PREDICTOR = {"component": "predictor", "serving.kserve.io/inferenceservice": "flights-delay"}
    PREDICT = "/v1/models/flights-delay:predict"
    SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
    DEX = "http://dex.auth.svc.cluster.local:5556/dex"

    @pytest.fixture
    def policies(self, rendered):
        return [o for o in rendered["multi-user"] if o["apiVersion"].startswith("security.istio.io/")]

    def decide(self, policies, request, labels=None, namespace=None):
        return decide(policies, namespace or self.NAMESPACE, self.PREDICTOR if labels is None else labels, request)

    def test_the_namespaces_service_accounts_may_predict(self, policies):
        pipeline_step = Request(self.PREDICT, (self.SA_ISSUER, f"system:serviceaccount:{self.NAMESPACE}:default-editor"))
        assert self.decide(policies, pipeline_step) == 200
        other_issuer_form = Request(self.PREDICT, ("https://kubernetes.default.svc",
                                                  f"system:serviceaccount:{self.NAMESPACE}:reporting"))
        assert self.decide(policies, other_issuer_form) == 200

    def test_requests_without_a_valid_token_are_refused(self, policies):
        assert self.decide(policies, Request(self.PREDICT)) == 403
        assert self.decide(policies, Request(self.PREDICT, source_namespace=self.NAMESPACE)) == 403
        assert self.decide(policies, Request(self.PREDICT, ("https://evil.example", "me"))) == 401

    def test_another_profiles_service_accounts_are_refused(self, policies):
        intruder = Request(self.PREDICT, (self.SA_ISSUER, "system:serviceaccount:kubeflow-user-other:default-editor"))
        assert self.decide(policies, intruder) == 403
        prefix_trick = Request(self.PREDICT, (self.SA_ISSUER, f"system:serviceaccount:{self.NAMESPACE}-x:default-editor"))
        assert self.decide(policies, prefix_trick) == 403

    def test_kubeflow_users_tokens_are_accepted_for_the_profiles_own_policies_to_judge(self, policies):
        """A Dex token forwarded by Kubeflow's gateway is valid here (not 401), and not denied for lack of a
        token; whether the user may call is the profile controller's AuthorizationPolicies' decision."""
        user = Request(self.PREDICT, (self.DEX, "CgR1c2VyEgVsb2NhbA"))
        assert self.decide(policies, user) == 403  # these policies alone allow no user
        owner_access = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                        "metadata": {"name": "ns-owner-access-istio", "namespace": self.NAMESPACE},
                        "spec": {"rules": [{"from": [{"source": {"requestPrincipals": [f"{self.DEX}/CgR1c2VyEgVsb2NhbA"]}}]}]}}
        assert self.decide([*policies, owner_access], user) == 200
        assert self.decide([*policies, owner_access], Request(self.PREDICT)) == 403

    def test_knative_probes_and_drain_pass_without_a_token(self, policies):
        for path in ("/healthz", "/ready", "/wait-for-drain"):
            assert self.decide(policies, Request(path, source_namespace="knative-serving")) == 200
        assert self.decide(policies, Request(self.PREDICT, source_namespace="knative-serving")) == 403

    def test_only_predictor_pods_of_the_namespace_are_governed(self, policies):
        assert self.decide(policies, Request(self.PREDICT), labels={"app": "feast"}) == 200
        assert self.decide(policies, Request(self.PREDICT), namespace="kubeflow") == 200


def test_mlflow_server_reads_its_database_from_the_secret_and_is_served_on_its_port(rendered):
    objects = {obj["kind"]: obj for obj in rendered["mlflow"]}
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{DEFAULT_REGISTRY}/base:{__version__}"
    assert container["command"] == ["mlflow", "server"]
    secret_ref = container["env"][0]["valueFrom"]["secretKeyRef"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in container["args"]
    assert container["env"][0]["name"] == "MLFLOW_BACKEND_STORE_URI"
    assert secret_ref == {"name": objects["Secret"]["metadata"]["name"], "key": "uri"}
    assert "uri" in objects["Secret"]["stringData"]
    service = objects["Service"]
    assert service["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert f"--port={container['ports'][0]['containerPort']}" in container["args"]
    allowed = next(arg for arg in container["args"] if arg.startswith("--allowed-hosts="))
    assert f"{service['metadata']['name']}.*:5000" in allowed.split("=", 1)[1].split(",")
