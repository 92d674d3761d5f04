"""The Helm chart in deploy/helm/spaceport.

It lints, renders for the three ways of reaching OneData (CERIT's labelled Secrets and
claims, oneclient sidecars, existing claims), every rendered object validates against the
Kubernetes API schemas of every supported version, and the Pod has the shape the design
depends on: spaceport is a native sidecar whose startup probe holds the desktop back until
stage-in is done, the desktop stops before the final save, the grace period pays for that
save, no secret is spelled out in a Pod spec, the desktop sees only the working copies, and
one Service leads to spaceport's port. Bad form input is refused by values.schema.json.
CERIT's own keys, forms and rules are tested in test_cerit_chart.py, the restricted pod
profile in test_pod_security.py.

Needs `helm-python-sdk` (Helm's Go SDK as a library; no helm binary) and
`kubernetes-validate`; the tests skip, saying so, when either is missing.
"""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest
import yaml

from chart_helpers import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    SECRETS,
    VALUES,
    env_of,
    helm,
    kubernetes_validate,
    kv_utils,
    merged,
    mounts_of,
    named_port,
    oneclient_values,
    portal_values,
    pvc_values,
    render,
)


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(params=sorted(VALUES))
def mode(request) -> str:
    return request.param


@pytest.fixture
def rendered(chart, mode):
    return render(chart, VALUES[mode]())


# --- lint and schema validation --------------------------------------------------------


def test_chart_lints_without_warnings(mode):
    report = helm.lint(CHART, VALUES[mode](), strict=True, kube_version="v1.29.0")
    # Severity 1 is informational ("icon is recommended"); warnings and errors are not.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


def test_chart_requires_native_sidecars():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["kubeVersion"] == ">=1.29.0-0"
    # and the objects are validated from that floor to the newest schemas there are
    assert KUBE_VERSIONS[0] == "1.29.0" and len(KUBE_VERSIONS) >= 4


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_against_kubernetes_schema(rendered, mode, kube_version):
    kinds = sorted(o["kind"] for o in rendered.objects)
    # cerit mode adds one Secret per space for the platform's OneData claims
    secrets = ["Secret"] * (3 if mode == "cerit" else 1)
    assert kinds == [
        "Deployment",
        "Ingress",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        *secrets,
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
    # the generic profile has no domain to derive the host from
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
    "unknown profile": ("cerit", {"profile": "cern"}, "/profile"),
    "a misspelt CERIT key": ("cerit", {"od": {"dataset": {"spaceID": "x"}}}, "spaceID"),
    "an unknown CERIT section": ("cerit", {"instanse": {"mincpu": 2}}, "instanse"),
    "CERIT's CPU that is not a quantity": ("cerit", {"instance": {"maxcpu": "lots"}}, "/instance/maxcpu"),
    "CERIT's dataset and source both given": (
        "cerit",
        {"od": {"dataset": {"spaceId": "a"}, "source": {"spaceId": "b"}}},
        "/od",
    ),
    "a basic-auth user with a colon": ("pvc", {"auth": {"user": "a:b"}}, "/auth/user"),
    "an unknown access mode": ("cerit", {"workVolumes": {"accessMode": "RWX"}}, "/workVolumes/accessMode"),
    "an unknown host style": ("cerit", {"ingress": {"hostStyle": "pretty"}}, "/ingress/hostStyle"),
    "a negative lock wait": ("pvc", {"spaceport": {"waitForLock": -1}},
                             "/spaceport/waitForLock"),
    "a lock wait in words": ("cerit", {"spaceport": {"waitForLock": "forever"}},
                             "/spaceport/waitForLock"),
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
    assert rendered.onedata_secrets == []


# Refused while rendering, after the schema: what only the resolved values can tell (CERIT's
# keys stand in for the chart's, so neither set alone is required by the schema).
# case: (mode, override, words the refusal must contain)
REFUSED_WHEN_RESOLVED = {
    "cerit without the project token": (
        "cerit",
        {"onedata": {"project": {"token": ""}}},
        "onedata.project.token, or CERIT's od.project.token",
    ),
    "cerit without a host": ("cerit", {"onedata": {"host": ""}}, "od.dataset.host"),
    "cerit without the password": ("cerit", {"vnc": {"password": ""}}, "vnc.vncPassword"),
    "cerit with a path inside the space": (
        "cerit",
        {"onedata": {"project": {"path": "sub"}}},
        "onedata.project.path is not supported in onedata.mode cerit",
    ),
    "CERIT's VNC client port": ("cerit", {"vnc": {"useVncClient": True}}, "vnc.useVncClient=true"),
    "CERIT's microk8s": ("cerit", {"instance": {"microk8s": "true"}}, "instance.microk8s=true"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_WHEN_RESOLVED))
def test_values_refused_when_resolved(chart, case):
    mode, override, words = REFUSED_WHEN_RESOLVED[case]
    values = merged(VALUES[mode](), override)
    with pytest.raises(helm.HelmError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert words in str(refused.value)


def test_without_the_schema_a_missing_host_is_still_refused(tmp_path):
    # helm --skip-schema-validation: the template's own check names the missing value
    import shutil

    copy_dir = tmp_path / "spaceport"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "values.schema.json").unlink()
    with helm.Chart.load(copy_dir) as unchecked:
        values = merged(pvc_values(), {"ingress": {"host": ""}})
        with pytest.raises(helm.HelmError) as refused:
            unchecked.render(values, name=RELEASE, namespace=NAMESPACE)
        assert "ingress.host is missing" in str(refused.value)
        # and the same values with a host render
        unchecked.render(pvc_values(), name=RELEASE, namespace=NAMESPACE)


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
    else:
        # cerit: the tokens go into the platform's Secrets (test_cerit_chart.py), not here
        assert not any("token" in key for key in data if key != "spaceport-api-token")


def test_every_sensitive_variable_comes_from_the_secret(rendered):
    secret = rendered.main_secret
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
    # CERIT's images read VNC_PASS; some builds of its master image read MYVNCPASSWORD
    for name in ("VNC_PASS", "MYVNCPASSWORD"):
        assert desktop_env[name]["valueFrom"]["secretKeyRef"]["key"] == "vnc-password"


def test_secrets_spaceport_reads_are_mounted_files_it_is_pointed_at(rendered):
    spaceport = rendered.container("spaceport")
    env = env_of(spaceport)
    assert "SPACEPORT_TOKEN" not in env and "SPACEPORT_AUTH_PASSWORD" not in env
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    mount = mounts_of(spaceport)["spaceport-secrets"]
    assert mount["readOnly"] is True
    secret_volume = volumes["spaceport-secrets"]["secret"]
    assert secret_volume["secretName"] == rendered.main_secret["metadata"]["name"]
    files = {item["key"]: f"{mount['mountPath']}/{item['path']}" for item in secret_volume["items"]}
    # the API token, and the basic-auth password: the VNC password, one password for all
    assert files == {
        "spaceport-api-token": env["SPACEPORT_TOKEN_FILE"]["value"],
        "vnc-password": env["SPACEPORT_AUTH_PASSWORD_FILE"]["value"],
    }
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
    # and the shared folder where spaceport signals "ok"
    assert set(desktop) == {"work-project", "work-source", "shared", "desktop-shm"}
    assert desktop["shared"]["mountPath"] == mounts_of(rendered.container("spaceport"))["shared"]["mountPath"]
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
    elif mode == "cerit":
        # the claims CERIT's platform makes of the chart's Secrets: pvc-<secret name>
        secrets = {s["metadata"]["name"] for s in rendered.onedata_secrets}
        source = volumes["onedata-source"]["persistentVolumeClaim"]
        project = volumes["onedata-project"]["persistentVolumeClaim"]
        assert source["readOnly"] is True and "readOnly" not in project
        assert {source["claimName"], project["claimName"]} == {f"pvc-{n}" for n in secrets}
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
        # an emptyDir that only holds the mount point
        assert set(volumes[volume]) == {"name", "emptyDir"}
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
    elif mode == "pvc":
        assert env["SPACEPORT_PRIMARY"]["value"] == "/onedata/project/ribosome"
        assert env["SPACEPORT_SOURCE"]["value"] == "/onedata/source"
    else:
        # the claims' roots: each holds one folder, the space, which spaceport works on
        assert env["SPACEPORT_PRIMARY"]["value"] == "/onedata/project"
        assert env["SPACEPORT_SOURCE"]["value"] == "/onedata/source"
    assert ("SPACEPORT_SPACE_FOLDER" in env) is (mode == "cerit")
    if mode == "cerit":
        assert env["SPACEPORT_SPACE_FOLDER"]["value"] == "1"
    # CERIT's paths, which links inside CERIT's projects use, in every mode
    assert env["SPACEPORT_WORK"]["value"] == "/mnt/vol-project"
    assert env["SPACEPORT_SOURCE_WORK"]["value"] == "/mnt/vol-dataset"
    assert env["SPACEPORT_INSTANCE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SPACEPORT_LISTEN"]["value"] == "0.0.0.0:8000"
    default_interval = 120 if mode == "cerit" else 300
    assert env["SPACEPORT_INTERVAL"]["value"] == str(values["spaceport"].get("interval", default_interval))
    # the desktop in the same pod, and the file its wrapper waits for
    assert env["SPACEPORT_DESKTOP_URL"]["value"] == "http://127.0.0.1:5901"
    assert env["SPACEPORT_INSTANCE_STATUS_FILE"]["value"] == "/mnt/shared/instance-status"


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
        # the interface the chart relies on (the chart's README, docs/CERIT.md)
        "space-folder",
        "cerit",
        "instance-status-file",
        "desktop-url",
        "auth-user",
        "auth-password-file",
        "source-in-background",
        "wait-for-lock",
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


def test_a_held_project_is_waited_for_in_every_mode(rendered, mode):
    # The desktop's address shows the progress page naming the holder instead of a crash
    # loop behind nginx's 503 (spaceport run --wait-for-lock; tests/test_wait_for_lock.py).
    env = env_of(rendered.container("spaceport"))
    assert env["SPACEPORT_WAIT_FOR_LOCK"] == {"name": "SPACEPORT_WAIT_FOR_LOCK", "value": "inf"}


def test_cerits_keys_alone_wait_for_a_held_project_and_the_wait_can_be_set(chart):
    env = env_of(render(chart, portal_values()).container("spaceport"))
    assert env["SPACEPORT_WAIT_FOR_LOCK"]["value"] == "inf"
    for given, said in ((0, "0"), (3600, "3600"), ("inf", "inf")):
        values = merged(pvc_values(), {"spaceport": {"waitForLock": given}})
        env = env_of(render(chart, values).container("spaceport"))
        assert env["SPACEPORT_WAIT_FOR_LOCK"]["value"] == said


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
    # named with the release and the space (test_cerit_chart.py has the naming rules)
    source = claims[f"pvc-scipion-{RELEASE}-work-dataset-{NAMESPACE}-a1b2c3d4"]
    project = claims[f"pvc-scipion-{RELEASE}-work-project-{NAMESPACE}-f6e5d4c3"]
    assert source["spec"]["resources"]["requests"]["storage"] == "2Ti"
    assert source["spec"]["storageClassName"] == "nfs-csi"
    assert project["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert project["spec"]["storageClassName"] == "zfs-csi"
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    for side, claim in (("source", source), ("project", project)):
        assert volumes[f"work-{side}"]["persistentVolumeClaim"] == {
            "claimName": claim["metadata"]["name"]
        }
        # kept on uninstall by default, so a reinstall for the same space resumes
        assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        # the generic profile's access mode: a cluster's default class may not offer RWX
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # an empty storageClass means the cluster's default: the field must be absent, not ""
    rendered = render(
        chart, merged(pvc_values(), {"workVolumes": {"project": {"keepOnUninstall": False}}})
    )
    claims = {
        c["metadata"]["labels"]["app.kubernetes.io/component"]: c
        for c in rendered.of_kind("PersistentVolumeClaim")
    }
    assert all("storageClassName" not in c["spec"] for c in claims.values())
    assert "annotations" not in claims["work-project"]["metadata"]
    assert claims["work-source"]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # the generic profile's sizes
    assert claims["work-source"]["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert claims["work-project"]["spec"]["resources"]["requests"]["storage"] == "100Gi"


def test_every_container_has_requests_and_limits(rendered):
    # CERIT refuses requests without limits and asks for ephemeral-storage (kube-docs
    # resources.mdx); the same everywhere costs nothing.
    pod = rendered.pod
    for c in pod.get("initContainers", []) + pod["containers"]:
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) >= {"cpu", "memory", "ephemeral-storage"}, (
                c["name"], kind
            )


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


# --- Service and Ingress: one way in, to spaceport's port ---------------------------------


def test_one_service_leads_to_spaceport_even_before_the_pod_is_ready(rendered):
    (service,) = rendered.of_kind("Service")
    spec = service["spec"]
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= labels.items()
    (port,) = spec["ports"]
    assert named_port(rendered.container("spaceport"), port["targetPort"]) == 8000
    # the progress page must answer during stage-in (hours), when the pod is not Ready
    assert spec["publishNotReadyAddresses"] is True


def test_generic_ingress_host(chart):
    def ingress(values):
        return render(chart, values).one("Ingress")

    spec = ingress(pvc_values())["spec"]
    (rule,) = spec["rules"]
    assert rule["host"] == "scipion.handl-ns.dyn.cloud.e-infra.cz"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": "scipion-spaceport", "port": {"name": "http"}}
    # the generic profile: no TLS, no class, no annotations unless asked
    assert "tls" not in spec and "ingressClassName" not in spec
    assert "annotations" not in ingress(pvc_values())["metadata"]
    obj = ingress(
        merged(
            pvc_values(),
            {
                "ingress": {
                    "className": "nginx",
                    "annotations": {"example.org/a": "b"},
                    "tls": {"enabled": True, "secretName": "scipion-cert", "clusterIssuer": "my-ca"},
                }
            },
        )
    )
    assert obj["spec"]["ingressClassName"] == "nginx"
    assert obj["spec"]["tls"] == [
        {"hosts": ["scipion.handl-ns.dyn.cloud.e-infra.cz"], "secretName": "scipion-cert"}
    ]
    assert obj["metadata"]["annotations"] == {
        "example.org/a": "b",
        "cert-manager.io/cluster-issuer": "my-ca",
    }
    no_ingress = render(chart, merged(pvc_values(), {"ingress": {"enabled": False, "host": ""}}))
    assert no_ingress.of_kind("Ingress") == []
    assert "port-forward svc/scipion-spaceport" in no_ingress.notes


# --- documentation --------------------------------------------------------------------------


def _schema_paths(schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every setting the schema accepts, down to the values it treats as a
    whole (resources, annotations, lists…). Values that differ by profile are only here, not
    in values.yaml, so the schema is the list to walk."""
    paths = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "properties" in sub and key not in ("resources", "global"):
            paths += _schema_paths(sub, path + ".")
        elif key != "global":
            paths.append(path)
    return paths


def _schema_node(schema: dict, path: str) -> dict:
    node = schema
    for part in path.split("."):
        assert part in node.get("properties", {}), f"{path} is not in values.schema.json"
        node = node["properties"][part]
    return node


def test_every_value_is_in_the_schema_and_documented():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and value and key != "resources":
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    for path in leaves(values):
        _schema_node(schema, path)
    paths = _schema_paths(schema)
    for path in paths:
        assert f"`{path}`" in readme, f"{path} is not documented in the chart README"
    # the settings the issues ask for are all there, CERIT's keys among them
    for required in (
        "profile",
        "onedata.mode",
        "onedata.host",
        "onedata.source.spaceId",
        "onedata.source.token",
        "onedata.project.spaceId",
        "onedata.project.token",
        "onedata.cerit.oneclientOptions",
        "vnc.password",
        "auth.user",
        "spaceport.interval",
        "spaceport.sourceInBackground",
        "spaceport.finalSaveDeadline",
        "workVolumes.source.storageClass",
        "workVolumes.source.size",
        "workVolumes.project.storageClass",
        "workVolumes.project.size",
        "ingress.host",
        "vnc.vncPassword",
        "od.host",
        "od.dataset.spaceId",
        "od.project.token",
        "instance.mincpu",
        "instance.keepVolumes",
        "master.vncPassword",
    ):
        assert required in paths, required


def test_rancher_form_asks_only_for_values_the_schema_knows():
    schema = json.loads((CHART / "values.schema.json").read_text())
    questions = yaml.safe_load((CHART / "questions.yaml").read_text())["questions"]
    for q in questions:
        node = _schema_node(schema, q["variable"])
        if "default" in q and q["type"] in ("boolean", "enum"):
            # a default the schema would refuse would break every install from the form
            assert node.get("enum", [q["default"]]) and (
                q["type"] != "enum" or set(q["options"]) <= set(node["enum"])
            ), q["variable"]
    secret_inputs = {q["variable"] for q in questions if q["type"] == "password"}
    assert secret_inputs == {"vnc.vncPassword", "od.dataset.token", "od.project.token"}
