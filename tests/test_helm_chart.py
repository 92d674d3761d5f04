"""The Helm chart in deploy/helm/spaceport.

It lints, renders for both ways of reaching OneData (oneclient sidecars, existing claims),
every rendered object validates against the Kubernetes API schemas, and the Pod has the
shape the design depends on: spaceport is a native sidecar whose startup probe holds the
desktop back until stage-in is done, the desktop stops before the final save, the grace
period pays for that save, no secret is spelled out in a Pod spec, and the desktop sees
only the working copies. Bad form input is refused by values.schema.json.

Needs `helm-python-sdk` (Helm's Go SDK as a library; no helm binary) and
`kubernetes-validate`; the tests skip, saying so, when either is missing.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (pip install helm-python-sdk)"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate is not installed (pip install kubernetes-validate)",
)
from kubernetes_validate import utils as kv_utils  # noqa: E402

try:  # the wheel bundles libhelm_c; a platform without a wheel cannot load it
    helm.helm_sdk_version()
except helm.HelmError as exc:  # pragma: no cover - depends on the platform
    pytest.skip(f"helm-python-sdk cannot load its native library: {exc}", allow_module_level=True)

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "spaceport"
RELEASE = "scipion"
NAMESPACE = "handl-ns"

# The oldest Kubernetes with native sidecars on by default (the chart's kubeVersion floor),
# and the release where they went GA.
KUBE_VERSIONS = ("1.29.0", "1.33.0")

# Distinctive values, so that finding one in a manifest can only mean it leaked there.
SECRETS = {
    "source_token": "MDAxNWxvY2F0aW9uIG9uZXpvbmUKMDAzYmlkZW50aWZpZXIgc3JjLXRva2Vu",
    "project_token": "MDAxNWxvY2F0aW9uIG9uZXpvbmUKMDAzYmlkZW50aWZpZXIgcHJqLXRva2Vu",
    "vnc_password": "Vnc-pa55word-7c1e",
    "api_token": "api-token-4b9d2f0e8a7c6b5d",
}


def oneclient_values() -> dict:
    """What the install form asks for, filled in (oneclient mode)."""
    return {
        "onedata": {
            "mode": "oneclient",
            "host": "oneprovider.example.org",
            "source": {"spaceId": "a1b2c3d4e5f6", "token": SECRETS["source_token"]},
            "project": {
                "spaceId": "f6e5d4c3b2a1",
                "token": SECRETS["project_token"],
                "path": "projects/2024-ribosome",
            },
        },
        "vnc": {"password": SECRETS["vnc_password"]},
        "spaceport": {"interval": 240, "finalSaveDeadline": 600, "apiToken": SECRETS["api_token"]},
        "workVolumes": {
            "source": {"size": "2Ti", "storageClass": "nfs-csi"},
            "project": {"size": "200Gi", "storageClass": "zfs-csi"},
        },
        "desktop": {
            "image": {"repository": "registry.example.org/scipion/desktop", "tag": "3.1.0"},
            "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "10"}},
        },
        "ingress": {"host": "scipion.handl-ns.dyn.cloud.e-infra.cz"},
    }


def pvc_values() -> dict:
    """The same deployment with the spaces provided as claims (e.g. by a OneData CSI driver)."""
    return {
        "onedata": {
            "mode": "pvc",
            "source": {"claimName": "onedata-raw-movies"},
            "project": {"claimName": "onedata-projects", "path": "ribosome"},
        },
        "vnc": {"password": SECRETS["vnc_password"]},
        "spaceport": {"apiToken": SECRETS["api_token"]},
        "ingress": {"host": "scipion.handl-ns.dyn.cloud.e-infra.cz"},
    }


VALUES = {"oneclient": oneclient_values, "pvc": pvc_values}


def merged(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, recursively (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


class Rendered:
    """One rendering of the chart: the raw manifests and the objects parsed from them."""

    def __init__(self, manifests: dict[str, str]):
        self.manifests = {
            name: text for name, text in manifests.items() if name.endswith((".yaml", ".yml"))
        }
        self.notes = next((t for n, t in manifests.items() if n.endswith("NOTES.txt")), "")
        self.objects = [
            doc for text in self.manifests.values() for doc in yaml.safe_load_all(text) if doc
        ]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict:
        (found,) = self.of_kind(kind)
        return found

    @property
    def pod(self) -> dict:
        return self.one("Deployment")["spec"]["template"]["spec"]

    def container(self, name: str) -> dict:
        pod = self.pod
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c["name"] == name:
                return c
        raise AssertionError(f"no container {name!r} in the pod")

    @property
    def secret_data(self) -> dict[str, str]:
        data = self.one("Secret")["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def render(chart, values: dict) -> Rendered:
    return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(params=sorted(VALUES))
def mode(request) -> str:
    return request.param


@pytest.fixture
def rendered(chart, mode) -> Rendered:
    return render(chart, VALUES[mode]())


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts_of(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def named_port(container: dict, port) -> int:
    """Resolve a probe's or Service's port (a name or a number) against a container."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    return number


# --- lint and schema validation --------------------------------------------------------


def test_chart_lints_without_warnings(mode):
    report = helm.lint(CHART, VALUES[mode](), strict=True, kube_version="v1.29.0")
    # Severity 1 is informational ("icon is recommended"); warnings and errors are not.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


def test_chart_requires_native_sidecars():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["kubeVersion"] == ">=1.29.0-0"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_against_kubernetes_schema(rendered, kube_version):
    kinds = sorted(o["kind"] for o in rendered.objects)
    assert kinds == [
        "Deployment",
        "Ingress",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
        "Service",
    ]
    for obj in rendered.objects:
        # strict: an unknown field (a typo, or a field this Kubernetes does not have) fails
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_schema_validation_is_not_vacuous(rendered):
    """The validator really checks Pod specs: a misspelt field and a wrong type both fail."""
    deployment = rendered.one("Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "690s"
    for broken in (typo, wrong_type):
        with pytest.raises(kv_utils.ValidationError):
            kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


def test_schema_is_valid_draft7():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    # Helm 3 (what Rancher runs) reads draft-07; keep the schema within it.
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)


def test_defaults_alone_are_refused_naming_what_is_missing(chart):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render({}, name=RELEASE, namespace=NAMESPACE)
    message = str(refused.value)
    for field in (
        "/onedata/source/token",
        "/onedata/project/spaceId",
        "/vnc/password",
        "/ingress/host",
    ):
        assert field in message


# case: (mode, override, the field the refusal must name)
BAD_VALUES = {
    "oneclient without the source token": (
        "oneclient",
        {"onedata": {"source": {"token": ""}}},
        "/onedata/source/token",
    ),
    "oneclient without the project space id": (
        "oneclient",
        {"onedata": {"project": {"spaceId": ""}}},
        "/onedata/project/spaceId",
    ),
    "oneclient without the host": ("oneclient", {"onedata": {"host": ""}}, "/onedata/host"),
    "a token with a space in it": (
        "oneclient",
        {"onedata": {"project": {"token": "abc def"}}},
        "/onedata/project/token",
    ),
    "a space id that is not an id": (
        "oneclient",
        {"onedata": {"source": {"spaceId": "x; rm -rf /"}}},
        "/onedata/source/spaceId",
    ),
    "pvc without the project claim": (
        "pvc",
        {"onedata": {"project": {"claimName": ""}}},
        "/onedata/project/claimName",
    ),
    "unknown mode": ("pvc", {"onedata": {"mode": "nfs"}}, "/onedata/mode"),
    "zero interval": ("oneclient", {"spaceport": {"interval": 0}}, "/spaceport/interval"),
    "negative interval": ("pvc", {"spaceport": {"interval": -5}}, "/spaceport/interval"),
    "interval as text": ("pvc", {"spaceport": {"interval": "300"}}, "/spaceport/interval"),
    "zero final-save deadline": (
        "pvc",
        {"spaceport": {"finalSaveDeadline": 0}},
        "/spaceport/finalSaveDeadline",
    ),
    "short VNC password": ("oneclient", {"vnc": {"password": "1234567"}}, "/vnc/password"),
    "path escaping the space": (
        "oneclient",
        {"onedata": {"project": {"path": "a/../../etc"}}},
        "/onedata/project/path",
    ),
    "absolute path": ("pvc", {"onedata": {"source": {"path": "/etc"}}}, "/onedata/source/path"),
    "ingress without host": ("pvc", {"ingress": {"host": ""}}, "/ingress/host"),
    "misspelt key": ("oneclient", {"onedata": {"sorce": {"spaceId": "x"}}}, "sorce"),
    "image tag read by YAML as a number": (
        "oneclient",
        {"desktop": {"image": {"tag": 21.02}}},
        "/desktop/image/tag",
    ),
    "volume size that is not a quantity": (
        "pvc",
        {"workVolumes": {"project": {"size": "lots"}}},
        "/workVolumes/project/size",
    ),
    "root as the work user": ("pvc", {"workUser": {"uid": 0}}, "/workUser/uid"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused(chart, case):
    mode, override, field = BAD_VALUES[case]
    values = merged(VALUES[mode](), override)
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert field in str(refused.value)
    # `helm lint` says the same, as an error finding rather than an exception
    assert any(field in error for error in helm.lint(CHART, values)["errors"])


def test_pvc_mode_needs_no_tokens(chart):
    rendered = render(chart, pvc_values())
    assert set(rendered.secret_data) == {"vnc-password", "spaceport-api-token"}


# --- the pod's shape ---------------------------------------------------------------------


def test_sidecars_start_in_order_before_the_desktop(rendered, mode):
    pod = rendered.pod
    init_names = [c["name"] for c in pod["initContainers"]]
    expected = (
        ["oneclient-source", "oneclient-project", "spaceport"]
        if mode == "oneclient"
        else ["spaceport"]
    )
    # spaceport last: it needs the mounts; each sidecar starts after the previous one's
    # startupProbe passed, and the regular containers after all of them.
    assert init_names == expected
    for sidecar in pod["initContainers"]:
        assert sidecar["restartPolicy"] == "Always", sidecar["name"]
        assert "startupProbe" in sidecar, sidecar["name"]
    assert [c["name"] for c in pod["containers"]] == ["desktop"]
    assert "restartPolicy" not in pod["containers"][0]


def test_no_sidecar_has_a_prestop_hook(rendered):
    # A sidecar's preStop runs when the pod starts terminating, while the desktop still
    # writes: an unmount or a save there would race the final save.
    for sidecar in rendered.pod["initContainers"]:
        assert "preStop" not in sidecar.get("lifecycle", {}), sidecar["name"]


def test_spaceport_probes(rendered):
    spaceport = rendered.container("spaceport")
    startup, liveness = spaceport["startupProbe"], spaceport["livenessProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    listen_port = int(env_of(spaceport)["SPACEPORT_LISTEN"]["value"].rpartition(":")[2])
    assert named_port(spaceport, startup["httpGet"]["port"]) == listen_port
    assert named_port(spaceport, liveness["httpGet"]["port"]) == listen_port
    assert "readinessProbe" not in spaceport


def test_startup_probe_waits_out_a_long_stage_in(chart):
    hours_36 = 36 * 3600
    values = merged(pvc_values(), {"spaceport": {"stageInTimeoutSeconds": hours_36}})
    rendered = render(chart, values)
    probe = rendered.container("spaceport")["startupProbe"]
    patience = probe["periodSeconds"] * probe["failureThreshold"]
    assert hours_36 <= patience < hours_36 + probe["periodSeconds"]
    # and the Deployment is not declared failed while it waits
    assert rendered.one("Deployment")["spec"]["progressDeadlineSeconds"] > hours_36


def test_oneclient_startup_probe_checks_the_space_it_mounts(chart):
    rendered = render(chart, oneclient_values())
    for side in ("source", "project"):
        oneclient = rendered.container(f"oneclient-{side}")
        env = env_of(oneclient)
        mountpoint, space_id = env["MOUNTPOINT"]["value"], env["SPACE_ID"]["value"]
        assert space_id == oneclient_values()["onedata"][side]["spaceId"]
        probe = " ".join(oneclient["startupProbe"]["exec"]["command"])
        assert f" {mountpoint} fuse" in probe and f"{mountpoint}/{space_id}" in probe
        # the mount point lies inside the volume the container shares
        (mount,) = oneclient["volumeMounts"]
        assert mountpoint.startswith(mount["mountPath"] + "/")
        assert env["ONECLIENT_PROVIDER_HOST"]["value"] == "oneprovider.example.org"


@pytest.mark.parametrize(("deadline", "margin"), [(600, 90), (1800, 45), (30, 0)])
def test_grace_period_is_final_save_deadline_plus_margin(chart, mode, deadline, margin):
    values = merged(
        VALUES[mode](),
        {"spaceport": {"finalSaveDeadline": deadline, "terminationMarginSeconds": margin}},
    )
    rendered = render(chart, values)
    assert rendered.pod["terminationGracePeriodSeconds"] == deadline + margin
    env = env_of(rendered.container("spaceport"))
    assert env["SPACEPORT_FINAL_SAVE_DEADLINE"]["value"] == str(deadline)


def test_default_final_save_deadline_is_600_seconds(chart):
    rendered = render(chart, pvc_values())
    assert (
        env_of(rendered.container("spaceport"))["SPACEPORT_FINAL_SAVE_DEADLINE"]["value"] == "600"
    )
    assert rendered.pod["terminationGracePeriodSeconds"] == 600 + 90


def test_deployment_recreates_instead_of_rolling(rendered):
    spec = rendered.one("Deployment")["spec"]
    # Two pods of one project at once would be a second deployment the lock refuses.
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


# --- secrets ---------------------------------------------------------------------------------


def test_no_secret_value_is_spelled_out_outside_the_secret(rendered):
    for name, text in rendered.manifests.items():
        if name.endswith("secret.yaml"):
            continue
        for label, value in SECRETS.items():
            assert value not in text, f"{label} appears in {name}"
            assert base64.b64encode(value.encode()).decode() not in text, (
                f"{label} (base64) in {name}"
            )


def test_secret_holds_what_the_form_gave(rendered, mode):
    data = rendered.secret_data
    assert data["vnc-password"] == SECRETS["vnc_password"]
    assert data["spaceport-api-token"] == SECRETS["api_token"]
    if mode == "oneclient":
        assert data["onedata-source-token"] == SECRETS["source_token"]
        assert data["onedata-project-token"] == SECRETS["project_token"]


def test_every_sensitive_variable_comes_from_the_secret(rendered):
    secret = rendered.one("Secret")
    pod = rendered.pod
    sensitive = re.compile(r"TOKEN|PASS|SECRET", re.IGNORECASE)
    refs = 0
    for c in pod["initContainers"] + pod["containers"]:
        for e in c.get("env", []):
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["data"], (c["name"], e["name"])
                refs += 1
            elif sensitive.search(e["name"]):
                # a path to a mounted secret file is fine; a value is not
                assert e["name"].endswith("_FILE"), (c["name"], e["name"])
            if "value" in e:
                assert e["value"] not in SECRETS.values()
    assert refs >= 1
    desktop_env = env_of(rendered.container("desktop"))
    assert desktop_env["VNC_PASS"]["valueFrom"]["secretKeyRef"]["key"] == "vnc-password"


def test_api_token_is_a_mounted_file_spaceport_is_pointed_at(rendered):
    spaceport = rendered.container("spaceport")
    token_file = env_of(spaceport)["SPACEPORT_TOKEN_FILE"]["value"]
    assert "SPACEPORT_TOKEN" not in env_of(spaceport)
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    mount = mounts_of(spaceport)["api-token"]
    assert mount["readOnly"] is True
    secret_volume = volumes["api-token"]["secret"]
    assert secret_volume["secretName"] == rendered.one("Secret")["metadata"]["name"]
    (item,) = secret_volume["items"]
    assert item["key"] == "spaceport-api-token"
    assert token_file == f"{mount['mountPath']}/{item['path']}"
    # group-readable only: the pod's fsGroup is spaceport's group
    assert secret_volume["defaultMode"] == 0o440
    assert rendered.pod["securityContext"]["fsGroup"] == spaceport["securityContext"]["runAsGroup"]


def test_api_token_is_generated_when_not_given(chart):
    values = pvc_values()
    del values["spaceport"]["apiToken"]
    token = render(chart, values).secret_data["spaceport-api-token"]
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token)


# --- volumes: who sees what ------------------------------------------------------------


def test_desktop_sees_only_the_working_copies(rendered):
    desktop = mounts_of(rendered.container("desktop"))
    assert set(desktop) <= {"work-project", "work-source", "desktop-shm"}
    assert desktop["work-source"]["readOnly"] is True
    assert not desktop["work-project"].get("readOnly", False)
    for m in desktop.values():
        assert "mountPropagation" not in m
    # Same paths as in spaceport: links Scipion makes with absolute targets resolve alike.
    spaceport = mounts_of(rendered.container("spaceport"))
    for name in ("work-project", "work-source"):
        assert desktop[name]["mountPath"] == spaceport[name]["mountPath"]


def test_spaceport_reads_the_source_read_only(rendered, mode):
    spaceport = mounts_of(rendered.container("spaceport"))
    assert spaceport["onedata-source"]["readOnly"] is True
    assert not spaceport["onedata-project"].get("readOnly", False)
    assert not spaceport["work-source"].get("readOnly", False)  # spaceport fills it
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    if mode == "pvc":
        assert volumes["onedata-source"]["persistentVolumeClaim"] == {
            "claimName": "onedata-raw-movies",
            "readOnly": True,
        }
        assert volumes["onedata-project"]["persistentVolumeClaim"] == {
            "claimName": "onedata-projects"
        }
    else:
        # the FUSE mount itself is read-only, whatever propagates into the volume
        args = " ".join(rendered.container("oneclient-source")["args"])
        assert "-o ro" in args
        assert "-o ro" not in " ".join(rendered.container("oneclient-project")["args"])


def test_fuse_mounts_propagate_only_from_oneclient_to_spaceport(chart):
    rendered = render(chart, oneclient_values())
    pod = rendered.pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    for side in ("source", "project"):
        volume = f"onedata-{side}"
        assert volumes[volume] == {"name": volume, "emptyDir": {}}
        users = {
            c["name"]: mounts_of(c)[volume]
            for c in pod["initContainers"] + pod["containers"]
            if volume in mounts_of(c)
        }
        assert set(users) == {f"oneclient-{side}", "spaceport"}
        assert users[f"oneclient-{side}"]["mountPropagation"] == "Bidirectional"
        assert users["spaceport"]["mountPropagation"] == "HostToContainer"


def test_spaceport_paths(chart, mode):
    values = VALUES[mode]()
    env = env_of(render(chart, values).container("spaceport"))
    if mode == "oneclient":
        project_id, source_id = (
            values["onedata"]["project"]["spaceId"],
            values["onedata"]["source"]["spaceId"],
        )
        assert (
            env["SPACEPORT_PRIMARY"]["value"]
            == f"/onedata/project/oneclient/{project_id}/projects/2024-ribosome"
        )
        assert env["SPACEPORT_SOURCE"]["value"] == f"/onedata/source/oneclient/{source_id}"
    else:
        assert env["SPACEPORT_PRIMARY"]["value"] == "/onedata/project/ribosome"
        assert env["SPACEPORT_SOURCE"]["value"] == "/onedata/source"
    assert env["SPACEPORT_WORK"]["value"] == "/mnt/vol-project"
    assert env["SPACEPORT_SOURCE_WORK"]["value"] == "/mnt/vol-source"
    assert env["SPACEPORT_INSTANCE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SPACEPORT_LISTEN"]["value"] == "0.0.0.0:8000"
    assert env["SPACEPORT_INTERVAL"]["value"] == str(values["spaceport"].get("interval", 300))


def test_spaceport_options_are_the_daemons(rendered):
    # `spaceport run` reads SPACEPORT_<OPTION>; a misspelt name would be silently ignored.
    options = {
        "primary",
        "work",
        "source",
        "source-work",
        "interval",
        "listen",
        "ready-file",
        "final-save-deadline",
        "keep-work",
        "token-file",
        "log-format",
        "instance",
        "status-dir",
    }
    known = {"SPACEPORT_" + o.upper().replace("-", "_") for o in options}
    assert set(env_of(rendered.container("spaceport"))) <= known
    assert rendered.container("spaceport")["args"] == ["run"]


def test_optional_spaceport_settings(chart):
    # By default the working copies stay on their volumes (deleted with the release anyway)
    # so that a restarted pod resumes instead of copying everything again.
    env = env_of(render(chart, pvc_values()).container("spaceport"))
    assert env["SPACEPORT_KEEP_WORK"]["value"] == "true"
    assert "SPACEPORT_STATUS_DIR" not in env
    values = merged(
        pvc_values(),
        {"spaceport": {"keepWork": False, "statusDir": ".status", "logFormat": "json"}},
    )
    env = env_of(render(chart, values).container("spaceport"))
    assert "SPACEPORT_KEEP_WORK" not in env
    assert env["SPACEPORT_STATUS_DIR"]["value"] == ".status"
    assert env["SPACEPORT_LOG_FORMAT"]["value"] == "json"


def test_taking_over_a_stale_lock_is_a_flag_never_an_environment_variable(chart):
    # spaceport ignores SPACEPORT_TAKE_OVER_STALE (safety overrides are flags only).
    container = render(chart, pvc_values()).container("spaceport")
    assert container["args"] == ["run"]
    container = render(chart, merged(pvc_values(), {"spaceport": {"takeOverStale": True}})) \
        .container("spaceport")
    assert container["args"] == ["run", "--take-over-stale"]
    assert not any("TAKE_OVER" in name for name in env_of(container))


def test_working_volumes(chart):
    rendered = render(chart, oneclient_values())
    claims = {c["metadata"]["name"]: c for c in rendered.of_kind("PersistentVolumeClaim")}
    source, project = claims["scipion-spaceport-source"], claims["scipion-spaceport-project"]
    assert source["spec"]["resources"]["requests"]["storage"] == "2Ti"
    assert source["spec"]["storageClassName"] == "nfs-csi"
    assert project["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert project["spec"]["storageClassName"] == "zfs-csi"
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert (
        volumes["work-source"]["persistentVolumeClaim"]["claimName"] == "scipion-spaceport-source"
    )
    assert (
        volumes["work-project"]["persistentVolumeClaim"]["claimName"] == "scipion-spaceport-project"
    )
    for claim in claims.values():
        assert "annotations" not in claim["metadata"]
    # an empty storageClass means the cluster's default: the field must be absent, not ""
    rendered = render(
        chart, merged(pvc_values(), {"workVolumes": {"project": {"keepOnUninstall": True}}})
    )
    claims = {c["metadata"]["name"]: c for c in rendered.of_kind("PersistentVolumeClaim")}
    assert all("storageClassName" not in c["spec"] for c in claims.values())
    assert claims["scipion-spaceport-project"]["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep"
    }


# --- security contexts -------------------------------------------------------------------


def test_only_oneclient_is_privileged(rendered):
    pod = rendered.pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        if c["name"].startswith("oneclient-"):
            # FUSE and Bidirectional propagation need it; nothing else does
            assert sc["privileged"] is True
            continue
        assert not sc.get("privileged", False), c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["runAsUser"] > 0, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
    assert rendered.container("spaceport")["securityContext"]["readOnlyRootFilesystem"] is True


def test_spaceport_and_desktop_share_the_work_user(chart):
    values = merged(pvc_values(), {"workUser": {"uid": 4242, "gid": 4343}})
    rendered = render(chart, values)
    for name in ("spaceport", "desktop"):
        sc = rendered.container(name)["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"]) == (4242, 4343)
    assert rendered.pod["securityContext"]["fsGroup"] == 4343


# --- Services and Ingress ---------------------------------------------------------------


def test_services_reach_the_desktop_and_the_progress_page(rendered):
    services = {s["metadata"]["name"]: s["spec"] for s in rendered.of_kind("Service")}
    desktop, progress = (
        services["scipion-spaceport-desktop"],
        services["scipion-spaceport-progress"],
    )
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for spec in (desktop, progress):
        assert spec["selector"].items() <= labels.items()
    assert named_port(rendered.container("desktop"), desktop["ports"][0]["targetPort"]) == 5901
    assert named_port(rendered.container("spaceport"), progress["ports"][0]["targetPort"]) == 8000
    # the progress page must answer during stage-in, before the pod is Ready
    assert progress["publishNotReadyAddresses"] is True
    assert not desktop.get("publishNotReadyAddresses", False)


def test_ingress_hosts(chart):
    def rules(values):
        ingress = render(chart, values).one("Ingress")["spec"]
        return ingress, {
            r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ingress["rules"]
        }

    _, hosts = rules(pvc_values())
    assert hosts == {
        "scipion.handl-ns.dyn.cloud.e-infra.cz": "scipion-spaceport-desktop",
        "scipion-progress.handl-ns.dyn.cloud.e-infra.cz": "scipion-spaceport-progress",
    }
    spec, hosts = rules(
        merged(
            pvc_values(),
            {
                "ingress": {
                    "progressHost": "progress.example.org",
                    "className": "nginx",
                    "tls": {"enabled": True, "secretName": "scipion-cert"},
                }
            },
        )
    )
    assert hosts["progress.example.org"] == "scipion-spaceport-progress"
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [
        {
            "hosts": ["scipion.handl-ns.dyn.cloud.e-infra.cz", "progress.example.org"],
            "secretName": "scipion-cert",
        }
    ]
    no_ingress = render(chart, merged(pvc_values(), {"ingress": {"enabled": False, "host": ""}}))
    assert no_ingress.of_kind("Ingress") == []
    assert "port-forward svc/scipion-spaceport-desktop" in no_ingress.notes


# --- documentation --------------------------------------------------------------------------


def _leaf_paths(values: dict, schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the settings a user sets: the schema's properties, down to the values
    the schema treats as a whole (resources, annotations, lists…)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            paths += _leaf_paths(value, sub, path + ".")
        else:
            paths.append(path)
    return paths


def test_every_value_is_in_the_schema_and_documented():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    paths = _leaf_paths(values, schema)
    for path in paths:
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"{path} is not in values.schema.json"
            node = node["properties"][part]
        assert f"`{path}`" in readme, f"{path} is not documented in the chart README"
    # the settings the issue asks the form for are all there
    for required in (
        "onedata.host",
        "onedata.source.spaceId",
        "onedata.source.token",
        "onedata.project.spaceId",
        "onedata.project.token",
        "vnc.password",
        "spaceport.interval",
        "spaceport.finalSaveDeadline",
        "workVolumes.source.storageClass",
        "workVolumes.source.size",
        "workVolumes.project.storageClass",
        "workVolumes.project.size",
        "ingress.host",
    ):
        assert required in paths


def test_rancher_form_asks_only_for_real_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    questions = yaml.safe_load((CHART / "questions.yaml").read_text())["questions"]
    for q in questions:
        node = values
        for part in q["variable"].split("."):
            assert isinstance(node, dict) and part in node, q["variable"]
            node = node[part]
    secret_inputs = {q["variable"] for q in questions if q["type"] == "password"}
    assert secret_inputs == {"vnc.password", "onedata.source.token", "onedata.project.token"}
