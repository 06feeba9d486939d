"""Local rollouts: two real model servers, the canary gates over replayed eval traffic, promote and
rollback, while the stable server answers concurrent traffic."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from dmlops.serving.deploy import RolloutFailed, deploy_local
from dmlops.serving.local import EndpointState, list_endpoints, stop_endpoints
from dmlops.serving.rollout import FIRST_DEPLOY, PROMOTE, ROLLBACK, RolloutPolicy
from serving_models import ConstantOutput, FailsOnFirstCategory, broken_copy, late_departure_copy

ENDPOINT = "flights-delay"
POLICY = RolloutPolicy(smoke_requests=5, window_requests=60, rows_per_request=2, concurrency=2, latency_min_requests=60)


pytestmark = pytest.mark.slow  # each test starts one or two model servers (a few seconds each)


@pytest.fixture(scope="module")
def serving_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("serving")
        patch.setenv("DMLOPS_SERVING_DIR", str(directory))
        yield directory
        stop_endpoints()


@pytest.fixture(scope="module")
def eval_uri(data_dir) -> str:
    return str(data_dir / "eval.parquet")


@pytest.fixture(scope="module")
def first_deploy(serving_dir, model_dir, eval_uri):
    """The endpoint's first model, live at 100% after its smoke test."""
    return deploy_local(str(model_dir), ENDPOINT, eval_uri, POLICY)


class SteadyTraffic:
    """Clients sending requests to one URL until stopped; counts answers and failures."""

    def __init__(self, url: str, body: dict, clients: int = 2):
        self.url, self.body = url, body
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stopping.is_set():
            try:
                response = session.post(self.url, json=self.body, timeout=10)
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:100]}")
            except requests.RequestException as error:
                self.failures.append(str(error))

    def __enter__(self) -> SteadyTraffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def test_first_deploy_goes_to_full_traffic_after_its_smoke_test(first_deploy):
    assert first_deploy.decision.action == FIRST_DEPLOY
    assert first_deploy.decision.smoke.requests == POLICY.smoke_requests and first_deploy.decision.smoke.errors == 0
    state = EndpointState.load(ENDPOINT)
    assert state.canary is None and state.stable.predict_url == first_deploy.predict_url


def test_healthy_canary_is_promoted(first_deploy, model_dir, eval_uri):
    old = EndpointState.load(ENDPOINT).stable
    # the same model again: a new version that behaves the same passes every gate
    result = deploy_local(str(model_dir), ENDPOINT, eval_uri, POLICY)
    assert result.decision.action == PROMOTE, result.decision.reasons
    assert [gate.name for gate in result.decision.gates] == ["error_rate", "p99_ms", "auc", "log_loss"]
    assert all(gate.passed for gate in result.decision.gates)
    assert result.decision.quality["canary"]["labelled_rows"] == 120
    assert result.decision.canary.requests == POLICY.window_requests
    state = EndpointState.load(ENDPOINT)
    assert state.canary is None and state.stable.port != old.port and not old.alive()
    assert result.predict_url == state.stable.predict_url
    assert requests.post(result.predict_url, json={"instances": []}).status_code == 400
    markdown = result.markdown()
    assert "**Decision: promote**" in markdown and "| auc |" in markdown
    assert result.decision.metrics()["promoted"] == 1.0


def test_a_better_model_that_predicts_differently_is_promoted_and_the_report_names_both_models(
    first_deploy, eval_uri, tmp_path
):
    """A canary better on the labelled rows but with a very different prediction distribution (PSI far
    over 0.25) is promoted, the shift reported as a warning; the report names the stable model it was
    judged against and the canary."""
    stable = EndpointState.load(ENDPOINT).stable
    better = late_departure_copy(Path(stable.model_uri), tmp_path / "better")
    result = deploy_local(str(better), ENDPOINT, eval_uri, POLICY)
    assert result.decision.action == PROMOTE, result.decision.reasons
    quality = result.decision.quality
    assert quality["canary"]["auc"] > quality["stable"]["auc"] and quality["canary"]["log_loss"] < quality["stable"]["log_loss"]
    assert result.decision.prediction_shift > POLICY.max_prediction_shift
    assert any(warning.startswith("prediction shift: PSI") for warning in result.decision.warnings)
    assert result.details["stable model"] == stable.model_uri != str(better)
    assert result.details["canary model"] == result.details["serving model"] == str(better)
    markdown = result.markdown()
    assert f"| stable model | {stable.model_uri} |" in markdown and f"| canary model | {better} |" in markdown


@pytest.mark.parametrize(
    "wrapper, reason",
    [(ConstantOutput, "auc = "), (FailsOnFirstCategory, "smoke test: ")],
)
def test_broken_canary_is_rolled_back_while_stable_serves_every_request(
    first_deploy, model_dir, eval_uri, eval_rows, tmp_path, wrapper, reason
):
    stable = EndpointState.load(ENDPOINT).stable
    broken = broken_copy(model_dir, tmp_path / "broken", wrapper)
    with SteadyTraffic(stable.predict_url, {"instances": eval_rows[:2]}) as traffic:
        result = deploy_local(str(broken), ENDPOINT, eval_uri, POLICY)
    assert result.decision.action == ROLLBACK
    markdown = result.markdown()
    assert f"| stable model | {stable.model_uri} |" in markdown and f"| canary model | {broken} |" in markdown
    assert any(line.startswith(reason) for line in result.decision.reasons), result.decision.reasons
    assert traffic.failures == [] and traffic.ok > 20
    state = EndpointState.load(ENDPOINT)
    assert state.stable == stable and state.stable.alive() and state.canary is None
    assert result.predict_url == stable.predict_url
    assert "**Decision: rollback**" in markdown
    assert result.decision.metrics()["promoted"] == 0.0


def test_first_deploy_of_a_failing_model_fails_and_leaves_nothing_running(serving_dir, model_dir, eval_uri, tmp_path):
    broken = broken_copy(model_dir, tmp_path / "broken", FailsOnFirstCategory)
    with pytest.raises(RolloutFailed, match="smoke test"):
        deploy_local(str(broken), "other-endpoint", eval_uri, POLICY)
    state = EndpointState.load("other-endpoint")
    assert state.stable is None and state.canary is None


def test_a_deployed_model_logs_what_it_answers_to_the_prediction_log(serving_dir, model_dir, eval_uri, tmp_path):
    from dmlops.serving.log_layout import read_log

    result = deploy_local(str(model_dir), "logged-endpoint", eval_uri, POLICY, prediction_log=str(tmp_path / "log"))
    example = EndpointState.load("logged-endpoint").example
    response = requests.post(result.predict_url, json=example, headers={"x-request-id": "after-deploy"}, timeout=10)
    assert response.status_code == 200 and response.headers["x-request-id"] == "after-deploy"
    stop_endpoints("logged-endpoint")  # the server writes what it holds as it stops
    logged = read_log(str(tmp_path / "log"))
    assert "after-deploy" in logged["request_id"].to_pylist()
    # the smoke test's and the gates' requests were answered by the same server: logged too
    assert logged.num_rows > len(example["instances"])


def test_stop_endpoints_stops_the_servers(first_deploy):
    server = EndpointState.load(ENDPOINT).stable
    assert ENDPOINT in [state.endpoint for state in list_endpoints()]
    assert ENDPOINT in stop_endpoints()
    assert not server.alive() and list_endpoints() == []
    with pytest.raises(requests.ConnectionError):
        requests.post(server.predict_url, json={"instances": []}, timeout=2)
