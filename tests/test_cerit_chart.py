"""The chart on CERIT-SC's cluster: CERIT's own keys, its form, its URL, its OneData Secrets,
its volumes, one way in through spaceport, and the desktop's wait for the ready signal.

The facts come from CERIT-SC's repositories (repository, path and commit beside each value
here and in chart_helpers.py; docs/CERIT.md, "CERIT facts the chart relies on", lists them
all). Rendering uses the real Helm SDK; the desktop's wrapper runs as a real `sh` process.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from fractions import Fraction

import pytest
import yaml
from chart_helpers import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    ONEPROVIDER,
    PORTAL_SET,
    PROJECT_SPACE,
    RELEASE,
    SECRETS,
    SEED_FORM,
    SOURCE_SPACE,
    V1_FORM,
    VALUES,
    cerit_values,
    env_of,
    helm,
    kubernetes_validate,
    merged,
    mounts_of,
    named_port,
    portal_values,
    render,
    set_values,
)


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _objects_by_key(rendered) -> dict:
    return {(o["kind"], o["metadata"]["name"]): o for o in rendered.objects}


def _with_token(values: dict) -> dict:
    # the API token is random unless given; give the same one to both sides of a comparison
    return merged(values, {"spaceport": {"apiToken": SECRETS["api_token"]}})


# --- CERIT's keys render like the chart's own --------------------------------------------

# For each of CERIT's key sets: what a user of the chart's own keys writes for the same app.
NATIVE_EQUIVALENTS = {
    "portal": (
        portal_values,
        lambda: {
            "profile": "cerit",
            "onedata": {
                "source": {"host": ONEPROVIDER, "spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
                "project": {"host": ONEPROVIDER, "spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]},
            },
            "vnc": {"password": PORTAL_SET["vnc.vncPassword"]},
            "desktop": {"resources": {
                "requests": {"cpu": "2", "memory": "2048Mi"},
                "limits": {"cpu": "8", "memory": "8192Mi"},
            }},
            "workVolumes": {
                "namePrefix": "scipo",
                "source": {"keepOnUninstall": True},
                "project": {"keepOnUninstall": True},
            },
        },
    ),
    "seed form (v3.0.10)": (
        lambda: copy.deepcopy(SEED_FORM),
        lambda: {
            "profile": "cerit",
            "onedata": {
                "host": ONEPROVIDER,
                "source": {"spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
                "project": {"spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]},
            },
            "vnc": {"password": SECRETS["vnc_password"]},
            "desktop": {"resources": {
                "requests": {"cpu": "2", "memory": "2048Mi"},
                "limits": {"cpu": "8", "memory": "8192Mi"},
            }},
        },
    ),
    "v1.0 form (reconstructed)": (
        lambda: copy.deepcopy(V1_FORM),
        lambda: {
            "profile": "cerit",
            "onedata": {
                "host": ONEPROVIDER,
                "source": {"spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
                "project": {"spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]},
            },
            "vnc": {"password": SECRETS["vnc_password"]},
            "desktop": {"resources": {
                "requests": {"cpu": "2", "memory": "2Gi"},
                "limits": {"cpu": "4", "memory": "4Gi"},
            }},
        },
    ),
}


@pytest.mark.parametrize("case", sorted(NATIVE_EQUIVALENTS))
def test_cerit_keys_render_the_same_objects_as_the_charts_own(chart, case):
    cerit, native = NATIVE_EQUIVALENTS[case]
    from_cerit = render(chart, _with_token(cerit()))
    from_native = render(chart, _with_token(native()))
    assert _objects_by_key(from_cerit) == _objects_by_key(from_native)
    # and not because both ignored something: the CERIT values did arrive
    desktop = from_cerit.container("desktop")
    assert desktop["resources"]["limits"]["cpu"] == native()["desktop"]["resources"]["limits"]["cpu"]
    data = {s["metadata"]["name"]: from_cerit.decoded(s) for s in from_cerit.onedata_secrets}
    assert sorted(d["space_id"] for d in data.values()) == sorted([SOURCE_SPACE, PROJECT_SPACE])
    assert from_cerit.secret_data["vnc-password"] == native()["vnc"]["password"]


def test_the_portal_values_are_typed_as_helm_types_them():
    # `--set` makes numbers and booleans of CERIT's strings: the chart must take those
    values = portal_values()
    assert values["instance"]["mincpu"] == 2 and values["instance"]["keepVolumes"] is True
    assert values["vnc"]["useVncClient"] is False
    assert values["od"]["dataset"]["spaceIdShort"] == SOURCE_SPACE[:8]
    # an all-digit short id becomes a number; the schema must accept it too
    assert helm.parse_set_string("od.dataset.spaceIdShort=12345678") == {
        "od": {"dataset": {"spaceIdShort": 12345678}}
    }


CERIT_KEY_SETS = {
    "portal": portal_values,
    "portal, short id all digits": lambda: merged(
        portal_values(), {"od": {"dataset": {"spaceIdShort": 12345678}}}
    ),
    "seed form": lambda: copy.deepcopy(SEED_FORM),
    "v1.0 form": lambda: copy.deepcopy(V1_FORM),
}


@pytest.mark.parametrize("case", sorted(CERIT_KEY_SETS))
def test_cerit_keys_alone_install_the_cerit_way(chart, case):
    """A catalogue install passes the form's values and nothing else."""
    values = CERIT_KEY_SETS[case]()
    report = helm.lint(CHART, values, strict=True, kube_version="v1.29.0")
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == []
    rendered = render(chart, values)
    for obj in rendered.objects:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    env = env_of(rendered.container("spaceport"))
    assert env["SPACEPORT_CERIT"]["value"] == "1"
    assert env["SPACEPORT_SPACE_FOLDER"]["value"] == "1"
    assert env["SPACEPORT_INTERVAL"]["value"] == "120"
    assert len(rendered.onedata_secrets) == 2
    (ingress,) = rendered.of_kind("Ingress")
    assert ingress["spec"]["rules"][0]["host"] == f"scipion.{RELEASE}.{NAMESPACE}.dyn.cloud.e-infra.cz"
    assert "cerit profile" in rendered.notes


def test_profile_can_be_forced(chart):
    # CERIT's keys select the cerit profile unless the profile is named; the generic profile
    # then asks for the chart's own keys of its default mode (oneclient)
    values = merged(copy.deepcopy(SEED_FORM), {
        "profile": "generic",
        "onedata": {"host": ONEPROVIDER,
                    "source": {"spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
                    "project": {"spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]}},
        "vnc": {"password": SECRETS["vnc_password"]},
        "ingress": {"host": "scipion.example.org"},
    })
    generic = render(chart, values)
    env = env_of(generic.container("spaceport"))
    assert "SPACEPORT_CERIT" not in env and env["SPACEPORT_INTERVAL"]["value"] == "300"
    assert [c["name"] for c in generic.pod["initContainers"]] == [
        "oneclient-source", "oneclient-project", "spaceport",
    ]
    assert generic.onedata_secrets == []
    with pytest.raises(helm.HelmValuesError) as refused:
        render(chart, merged(copy.deepcopy(SEED_FORM), {"profile": "generic"}))
    assert "/onedata/source/spaceId" in str(refused.value)
    # and the cerit profile can be chosen without any of CERIT's keys
    assert env_of(render(chart, cerit_values()).container("spaceport"))["SPACEPORT_CERIT"]["value"] == "1"


def test_cerit_profile_defaults_and_overrides(chart):
    rendered = render(chart, cerit_values())
    env = env_of(rendered.container("spaceport"))
    assert env["SPACEPORT_INTERVAL"]["value"] == "120"
    for claim in rendered.of_kind("PersistentVolumeClaim"):
        spec = claim["spec"]
        assert spec["storageClassName"] == "nfs-csi"
        assert spec["accessModes"] == ["ReadWriteMany"]
        assert spec["resources"]["requests"]["storage"] == "5000Gi"
        assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # every default of the profile can be set
    rendered = render(chart, merged(cerit_values(), {
        "spaceport": {"interval": 60, "ceritLock": False},
        "workVolumes": {"accessMode": "ReadWriteOnce",
                        "source": {"size": "8Ti", "storageClass": "csi-ceph-rbd-du"},
                        "project": {"keepOnUninstall": False}},
    }))
    env = env_of(rendered.container("spaceport"))
    assert env["SPACEPORT_INTERVAL"]["value"] == "60" and "SPACEPORT_CERIT" not in env
    claims = {c["metadata"]["labels"]["app.kubernetes.io/component"]: c
              for c in rendered.of_kind("PersistentVolumeClaim")}
    assert claims["work-source"]["spec"]["storageClassName"] == "csi-ceph-rbd-du"
    assert claims["work-source"]["spec"]["resources"]["requests"]["storage"] == "8Ti"
    assert claims["work-source"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "annotations" not in claims["work-project"]["metadata"]
    # CERIT's instance.keepVolumes decides for both volumes
    rendered = render(chart, merged(portal_values(), {"instance": {"keepVolumes": False}}))
    assert all("annotations" not in c["metadata"] for c in rendered.of_kind("PersistentVolumeClaim"))


# --- the form -------------------------------------------------------------------------------

# CERIT-SC/rancher-apps charts/scipion/v3.0.10/questions.yaml (commit 033e784f…), the form
# seed 001 shows, as (variable, label, required). Its keys are the seed generation's; the
# portal and the v1.0 generation call them vnc.vncPassword and od.dataset (the chart's form
# uses those, and both spellings install).
CERIT_FORM = [
    ("master.vncPassword", "noVNC password", True),
    ("od.host", "Onedata host", True),
    ("od.source.spaceId", "Onedata space-ID for source data", True),
    ("od.source.token", "Onedata token for source data", True),
    ("od.project.spaceId", "Onedata space-ID for project data", True),
    ("od.project.token", "Onedata token for project data", True),
    ("instance.mincpu", "Min CPU", False),
    ("instance.maxcpu", "Max CPU", False),
    ("instance.minram", "Min RAM", False),
    ("instance.maxram", "Max RAM", False),
]
SPELLING = {"master.vncPassword": "vnc.vncPassword", "od.source.spaceId": "od.dataset.spaceId",
            "od.source.token": "od.dataset.token"}
# The v1.0 form's defaults (../shared/CERIT.md; that form is not in the stored index).
CERIT_DEFAULTS = {"instance.mincpu": 2, "instance.maxcpu": 4, "instance.minram": "2Gi",
                  "instance.maxram": "4Gi", "instance.keepVolumes": True}


def _questions() -> list[dict]:
    return yaml.safe_load((CHART / "questions.yaml").read_text())["questions"]


def test_the_form_asks_what_cerits_asks():
    questions = {q["variable"]: q for q in _questions()}
    for variable, label, required in CERIT_FORM:
        q = questions[SPELLING.get(variable, variable)]
        assert q["label"] == label, variable
        assert bool(q.get("required", False)) is required, variable
    for variable, default in CERIT_DEFAULTS.items():
        assert questions[variable]["default"] == default, variable
    assert questions["instance.keepVolumes"]["type"] == "boolean"
    # nothing the chart derives is asked, nothing else is required
    assert "ingress.host" not in questions and "ingress.domain" not in questions
    required = {v for v, q in questions.items() if q.get("required")}
    assert required == {SPELLING.get(v, v) for v, _, r in CERIT_FORM if r}
    # the one field CERIT's form lacks
    background = questions["spaceport.sourceInBackground"]
    assert background["label"] == "Start the desktop before all source data is in"
    assert (background["type"], background["default"]) == ("boolean", False)


def _answers(questions: list[dict], answers: dict) -> dict:
    """The values Rancher sends: the given answers and every other question's default."""
    values: dict = {}
    for q in questions:
        if q["variable"] in answers:
            value = answers[q["variable"]]
        elif "default" in q:
            value = q["default"]
        else:
            continue
        node = values
        *parents, leaf = q["variable"].split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def test_the_forms_answers_alone_install(chart):
    values = _answers(_questions(), {
        "vnc.vncPassword": SECRETS["vnc_password"],
        "od.host": ONEPROVIDER,
        "od.dataset.spaceId": SOURCE_SPACE,
        "od.dataset.token": SECRETS["source_token"],
        "od.project.spaceId": PROJECT_SPACE,
        "od.project.token": SECRETS["project_token"],
        "spaceport.sourceInBackground": True,
    })
    rendered = render(chart, values)
    desktop = rendered.container("desktop")
    assert desktop["resources"]["requests"]["cpu"] == "2"
    assert desktop["resources"]["limits"]["memory"] == "4Gi"
    env = env_of(rendered.container("spaceport"))
    assert env["SPACEPORT_SOURCE_IN_BACKGROUND"]["value"] == "1"
    assert "SPACEPORT_SOURCE_IN_BACKGROUND" not in env_of(render(chart, cerit_values()).container("spaceport"))
    # the address question switches to the seed's host
    seed_style = render(chart, merged(values, {"ingress": {"hostStyle": "namespace"}}))
    assert seed_style.one("Ingress")["spec"]["rules"][0]["host"] == f"scipion.{NAMESPACE}.dyn.cloud.e-infra.cz"


# --- the URL --------------------------------------------------------------------------------


def _host(rendered) -> str:
    ((rule,),) = [i["spec"]["rules"] for i in rendered.of_kind("Ingress")]
    return rule["host"]


def test_derived_host_tls_and_class(chart):
    rendered = render(chart, cerit_values())
    ingress = rendered.one("Ingress")
    host = f"scipion.{RELEASE}.{NAMESPACE}.dyn.cloud.e-infra.cz"
    assert _host(rendered) == host
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": [host], "secretName": f"scipion-{RELEASE}-{NAMESPACE}-dyn-cloud-e-infra-cz-tls"}
    ]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["kubernetes.io/tls-acme"] == "true"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    # no basic-auth annotations: spaceport asks for the password (Traefik's nginx emulation
    # ignores them, kube-docs expose-http.mdx)
    assert not any("auth" in key for key in annotations)
    # the seed's host, one label, another domain, and an explicit host
    assert _host(render(chart, merged(cerit_values(), {"ingress": {"hostStyle": "namespace"}}))) == (
        f"scipion.{NAMESPACE}.dyn.cloud.e-infra.cz"
    )
    assert _host(render(chart, merged(cerit_values(), {"ingress": {"hostStyle": "flat"}}))) == (
        f"scipion-{RELEASE}-{NAMESPACE}.dyn.cloud.e-infra.cz"
    )
    assert _host(render(chart, merged(cerit_values(), {"ingress": {"domain": "apps.example.org"}}))) == (
        f"scipion.{RELEASE}.{NAMESPACE}.apps.example.org"
    )
    assert _host(render(chart, merged(cerit_values(), {"ingress": {"host": "my.example.org"}}))) == "my.example.org"
    # the issuer and class are settable (the newer kube-docs name letsencrypt-gateway and
    # the nginx-traefik class)
    switched = render(chart, merged(cerit_values(), {"ingress": {
        "className": "nginx-traefik", "tls": {"clusterIssuer": "letsencrypt-gateway"},
        "annotations": {"kubernetes.io/ingress.class": "nginx-traefik"},
    }})).one("Ingress")
    assert switched["spec"]["ingressClassName"] == "nginx-traefik"
    assert switched["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-gateway"
    assert switched["metadata"]["annotations"]["kubernetes.io/ingress.class"] == "nginx-traefik"
    # TLS off: no tls section, no ACME annotations
    plain = render(chart, merged(cerit_values(), {"ingress": {"tls": {"enabled": False}}})).one("Ingress")
    assert "tls" not in plain["spec"]
    assert not {"kubernetes.io/tls-acme", "cert-manager.io/cluster-issuer"} & set(plain["metadata"]["annotations"])


LONG_RELEASE = "scipion-" + "r" * 45  # 53 characters: Helm's longest release name
LONG_NAMESPACE = "n" * 63


@pytest.mark.parametrize("style", ["release", "namespace", "flat"])
@pytest.mark.parametrize(("release", "namespace"), [
    (RELEASE, NAMESPACE), (LONG_RELEASE, LONG_NAMESPACE), ("v1.2.scipion", NAMESPACE),
])
def test_every_dns_label_fits_63_characters(chart, style, release, namespace):
    rendered = render(chart, merged(cerit_values(), {"ingress": {"hostStyle": style}}),
                      name=release, namespace=namespace)
    host = _host(rendered)
    labels = host.split(".")
    assert all(0 < len(label) <= 63 for label in labels), host
    assert len(host) <= 253
    assert host.endswith(".dyn.cloud.e-infra.cz")
    # and the same inputs give the same host (a reinstall keeps its URL)
    assert _host(render(chart, merged(cerit_values(), {"ingress": {"hostStyle": style}}),
                        name=release, namespace=namespace)) == host


def test_a_label_too_long_is_shortened_with_a_hash(chart):
    host = _host(render(chart, merged(cerit_values(), {"ingress": {"hostStyle": "flat"}}),
                        name=LONG_RELEASE, namespace=LONG_NAMESPACE))
    first = host.split(".")[0]
    full = f"scipion-{LONG_RELEASE}-{LONG_NAMESPACE}"
    assert len(full) > 63 and len(first) == 63
    assert first == f"{full[:54]}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"
    # two releases sharing a long beginning still get two hosts
    other = _host(render(chart, merged(cerit_values(), {"ingress": {"hostStyle": "flat"}}),
                         name=LONG_RELEASE[:-1] + "x", namespace=LONG_NAMESPACE))
    assert other != host


@pytest.mark.parametrize("style", ["release", "flat", "namespace", "one host given"])
def test_two_releases_in_one_namespace_never_share_host_and_path(chart, style):
    if style == "one host given":
        values = merged(cerit_values(), {"ingress": {"host": "scipion.example.org"}})
    else:
        values = merged(cerit_values(), {"ingress": {"hostStyle": style}})
    a, b = (render(chart, values, name=n) for n in ("scipion", "scipion-2"))

    def host_paths(rendered):
        return {(r["host"], p["path"]) for i in rendered.of_kind("Ingress")
                for r in i["spec"]["rules"] for p in r["http"]["paths"]}

    shared = set(_objects_by_key(a)) & set(_objects_by_key(b))
    assert host_paths(a)
    if style in ("release", "flat"):
        assert not host_paths(a) & host_paths(b)
        assert not shared  # nor any other name two releases would fight over
    else:
        # One address for both: the two Ingresses are one object (named after the host), so
        # Helm refuses to install the second release (the object belongs to the first, its
        # meta.helm.sh/release-name says so) and no two Ingresses ever answer at one address.
        assert host_paths(a) == host_paths(b)
        host = a.one("Ingress")["spec"]["rules"][0]["host"]
        assert shared == {("Ingress", host)}


# --- OneData Secrets and claims ------------------------------------------------------------


@pytest.mark.parametrize("case", ["chart keys", "portal"])
def test_onedata_secrets_decoded_and_their_claims(chart, case):
    values = cerit_values() if case == "chart keys" else portal_values()
    rendered = render(chart, values)
    secrets = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in rendered.onedata_secrets}
    assert set(secrets) == {"onedata-source", "onedata-project"}
    expected = {
        "onedata-source": (SOURCE_SPACE, SECRETS["source_token"]),
        "onedata-project": (PROJECT_SPACE, SECRETS["project_token"]),
    }
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    for component, secret in secrets.items():
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"]["cerit-onedata-secret"] == "yes"
        data = rendered.decoded(secret)
        space, token = expected[component]
        assert data == {
            "host": ONEPROVIDER,
            "onedata_token": token,
            "space_id": space,
            "oneclient_options": "--force-proxy-io",
        }
        # the claim the platform makes of it, which the pod mounts
        name = secret["metadata"]["name"]
        claim = f"pvc-{name}"
        assert len(claim) <= 63
        side = component.removeprefix("onedata-")
        assert name == f"{RELEASE}-spaceport-od-{'dataset' if side == 'source' else 'project'}-{space[:8]}"
        assert volumes[f"onedata-{side}"]["persistentVolumeClaim"]["claimName"] == claim
    # the platform makes the claims; the chart must not
    claims = {c["metadata"]["name"] for c in rendered.of_kind("PersistentVolumeClaim")}
    assert not any(c.startswith(f"pvc-{RELEASE}-spaceport-od-") for c in claims)
    # oneclient_options is settable
    other = render(chart, merged(values, {"onedata": {"cerit": {"oneclientOptions": "--force-direct-io"}}}))
    assert {other.decoded(s)["oneclient_options"] for s in other.onedata_secrets} == {"--force-direct-io"}


def test_onedata_claim_names_fit_with_a_long_release(chart):
    rendered = render(chart, cerit_values(), name=LONG_RELEASE)
    for secret in rendered.onedata_secrets:
        assert len("pvc-" + secret["metadata"]["name"]) <= 63
    volumes = [v for v in rendered.pod["volumes"] if v["name"].startswith("onedata-")]
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes} == {
        "pvc-" + s["metadata"]["name"] for s in rendered.onedata_secrets
    }


# --- kept working volumes, per space ---------------------------------------------------------


def _work_claims(rendered) -> dict[str, str]:
    return {c["metadata"]["labels"]["app.kubernetes.io/component"]: c["metadata"]["name"]
            for c in rendered.of_kind("PersistentVolumeClaim")}


def test_kept_volumes_are_named_per_space(chart):
    first = _work_claims(render(chart, portal_values()))
    assert first == {
        "work-source": f"pvc-scipo-{RELEASE}-work-dataset-{NAMESPACE}-{SOURCE_SPACE[:8]}",
        "work-project": f"pvc-scipo-{RELEASE}-work-project-{NAMESPACE}-{PROJECT_SPACE[:8]}",
    }
    # a reinstall for the same spaces, with new tokens, password and sizes: the same claims
    again = merged(portal_values(), {
        "od": {"dataset": {"token": "another-token"}, "project": {"token": "yet-another"}},
        "vnc": {"vncPassword": "a-new-password"},
        "instance": {"maxcpu": 12},
    })
    assert _work_claims(render(chart, again)) == first
    # another project space: another project volume, the same source volume
    other = merged(portal_values(), {"od": {"project": {"spaceId": "0123456789abcdef0123456789abcdef",
                                                        "spaceIdShort": "01234567"}}})
    claims = _work_claims(render(chart, other))
    assert claims["work-source"] == first["work-source"]
    assert claims["work-project"] != first["work-project"]
    # another release in the same namespace never shares a working copy
    assert not set(_work_claims(render(chart, portal_values(), name="scipion-2")).values()) & set(first.values())
    # pvc mode: the claim stands for the space
    from chart_helpers import pvc_values

    a = _work_claims(render(chart, pvc_values()))
    b = _work_claims(render(chart, merged(pvc_values(), {"onedata": {"project": {"claimName": "other"}}})))
    assert a["work-source"] == b["work-source"] and a["work-project"] != b["work-project"]


def test_volume_names_fit_63_characters(chart):
    rendered = render(chart, merged(cerit_values(), {"workVolumes": {"namePrefix": "p" * 20}}),
                      name=LONG_RELEASE, namespace=LONG_NAMESPACE)
    names = list(_work_claims(rendered).values())
    assert len(set(names)) == 2 and all(len(n) <= 63 for n in names)
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert {volumes[f"work-{s}"]["persistentVolumeClaim"]["claimName"] for s in ("source", "project")} == set(names)


# --- the desktop: CERIT's image and contract --------------------------------------------------


def test_the_desktop_is_cerits_scipion_with_its_contract(chart):
    rendered = render(chart, portal_values())
    desktop = rendered.container("desktop")
    assert desktop["image"] == "hub.cerit.io/scipion/scipion-master:1.0"
    env = env_of(desktop)
    assert env["USE_DISPLAY"]["value"] == "1"
    assert env["VNC_PASS"]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-spaceport", "key": "vnc-password"}
    mounts = mounts_of(desktop)
    assert mounts["work-source"]["mountPath"] == "/mnt/vol-dataset" and mounts["work-source"]["readOnly"]
    assert mounts["work-project"]["mountPath"] == "/mnt/vol-project"
    assert mounts["shared"]["mountPath"] == "/mnt/shared"
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert "emptyDir" in volumes["shared"]
    # the noVNC port the image serves (590<USE_DISPLAY>)
    assert named_port(desktop, "novnc") == 5901
    # CERIT's resources from the portal's instance.*
    assert desktop["resources"]["requests"]["cpu"] == "2" and desktop["resources"]["limits"]["memory"] == "8192Mi"
    # the image's entrypoint, run by the wrapper
    assert desktop["command"][:2] == ["/bin/sh", "-c"] and desktop["command"][-1] == "/docker-entrypoint.sh"
    # the image is settable
    other = render(chart, merged(portal_values(), {"desktop": {"image": {"repository": "r.example.org/d", "tag": "2"},
                                                               "entrypoint": ["/start", "--x"]}}))
    assert other.container("desktop")["image"] == "r.example.org/d:2"
    assert other.container("desktop")["command"][-2:] == ["/start", "--x"]


# --- the desktop's resources: a request never above its limit ---------------------------

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")
_UNITS = {"": 1, "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(text) -> Fraction:
    """A Kubernetes quantity, exactly ("500m" is 1/2, "4Gi" is 4 * 2**30)."""
    found = _QUANTITY.match(str(text))
    assert found, f"not a Kubernetes quantity: {text!r}"
    return Fraction(found[1]) * _UNITS[found[2]]


def test_quantities_are_read_as_kubernetes_reads_them():
    assert quantity("500m") == quantity("0.5") == Fraction(1, 2)
    assert quantity("2") == 2 and quantity(2) == 2
    assert quantity("4Gi") == quantity("4096Mi") == 4 * 2**30 > quantity("4G") == 4 * 10**9
    assert quantity("4.294967296e+09") == 2**32 == quantity("4Gi")
    assert quantity("8192Mi") > quantity("7.9Gi") > quantity("8G")


def requests_above_limits(rendered) -> list[tuple]:
    """Every resource of every container (init containers and sidecars included) of every
    pod this rendering runs whose request is above its limit: the API server refuses such a
    pod at install."""
    found = []
    for pod_name, pod in rendered.pod_templates():
        for c in pod.get("initContainers", []) + pod["containers"]:
            resources = c.get("resources", {})
            limits = resources.get("limits", {})
            for name, request in resources.get("requests", {}).items():
                if name in limits and quantity(request) > quantity(limits[name]):
                    found.append((pod_name, c["name"], name, request, limits[name]))
    return found


def _form(**answers) -> dict:
    """What Rancher sends from this chart's form, with these answers (and the required ones)."""
    return _answers(_questions(), {
        "vnc.vncPassword": SECRETS["vnc_password"], "od.host": ONEPROVIDER,
        "od.dataset.spaceId": SOURCE_SPACE, "od.dataset.token": SECRETS["source_token"],
        "od.project.spaceId": PROJECT_SPACE, "od.project.token": SECRETS["project_token"],
        **answers})


# Each value set a user can install with, as they send it: the chart's own keys for each
# OneData mode, CERIT's portal, CERIT's forms, this chart's form.
EVERY_DEFAULT = {
    **{f"mode {mode}": VALUES[mode] for mode in VALUES},
    "portal": portal_values,
    "seed form (v3.0.10)": lambda: copy.deepcopy(SEED_FORM),
    "v1.0 form (reconstructed)": lambda: copy.deepcopy(V1_FORM),
    "this chart's form": _form,
}


@pytest.mark.parametrize("case", sorted(EVERY_DEFAULT))
def test_no_container_of_any_default_render_asks_more_than_its_limit(chart, case):
    rendered = render(chart, EVERY_DEFAULT[case]())
    assert rendered.pod_templates()
    assert requests_above_limits(rendered) == []
    assert "Note:" not in rendered.notes  # nothing had to be changed


# A Max below the request it would get otherwise: the request is lowered to that Max.
SMALLER_MAX = {
    # `--set` alone, below the chart's default requests (8Gi, 2 CPU): the issue's example
    "--set instance.maxram=4Gi": (lambda: merged(cerit_values(), set_values(
        {"instance.maxram": "4Gi"})), "memory", "4Gi", "8Gi"),
    "--set instance.maxcpu=1": (lambda: merged(cerit_values(), set_values(
        {"instance.maxcpu": "1"})), "cpu", "1", "2"),
    "--set instance.maxcpu=500m": (lambda: merged(cerit_values(), set_values(
        {"instance.maxcpu": "500m"})), "cpu", "500m", "2"),
    # the form: Max lowered below the Min it pre-fills (2 CPU, 2Gi), Min left as it was
    "form, Max RAM 1Gi": (lambda: _form(**{"instance.maxram": "1Gi"}), "memory", "1Gi", "2Gi"),
    "form, Max CPU 1": (lambda: _form(**{"instance.maxcpu": "1"}), "cpu", "1", "2"),
    # the chart's own keys: a limit alone, below the default request
    "desktop.resources.limits.memory=4Gi": (lambda: merged(VALUES["pvc"](), {"desktop": {
        "resources": {"limits": {"memory": "4Gi"}}}}), "memory", "4Gi", "8Gi"),
}


@pytest.mark.parametrize("case", sorted(SMALLER_MAX))
def test_a_max_below_the_request_lowers_the_request(chart, case):
    values, resource, limit, request_before = SMALLER_MAX[case]
    rendered = render(chart, values())
    assert requests_above_limits(rendered) == []
    desktop = rendered.container("desktop")["resources"]
    # the Max asked for is the limit, and the request is lowered to it, nothing else moves
    assert desktop["limits"][resource] == limit == desktop["requests"][resource]
    other = "cpu" if resource == "memory" else "memory"
    assert quantity(desktop["requests"][other]) <= quantity(desktop["limits"][other])
    assert (f"the desktop's {resource} request ({request_before}) was above its limit "
            f"({limit}): it is lowered to {limit}") in rendered.notes


@pytest.mark.parametrize("maximum, lowered", [
    # against the default requests, 8Gi and 2 CPU: the chart compares quantities, not text
    (("maxram", "8192Mi"), False), (("maxram", "9G"), False), (("maxram", "8G"), True),
    (("maxram", "7.9Gi"), True), (("maxram", 8589934592), False), (("maxram", 8589934591), True),
    (("maxcpu", "2000m"), False), (("maxcpu", "2.5"), False), (("maxcpu", "1999m"), True),
    (("maxcpu", "1.5"), True),
])
def test_the_chart_compares_quantities_in_any_unit(chart, maximum, lowered):
    key, value = maximum
    resource = "memory" if key == "maxram" else "cpu"
    rendered = render(chart, merged(cerit_values(), {"instance": {key: value}}))
    assert requests_above_limits(rendered) == []
    desktop = rendered.container("desktop")["resources"]
    assert quantity(desktop["limits"][resource]) == quantity(value)
    assert (desktop["requests"][resource] == desktop["limits"][resource]) is lowered
    assert ("Note:" in rendered.notes) is lowered


def test_a_min_above_the_default_limit_raises_the_limit(chart):
    # `--set instance.minram=32Gi` alone: the user's value wins over the chart's default
    # limit (16Gi), as every CERIT key does; the Min is never cut below what was asked.
    rendered = render(chart, merged(cerit_values(), set_values({"instance.minram": "32Gi",
                                                                "instance.mincpu": "12"})))
    assert requests_above_limits(rendered) == []
    desktop = rendered.container("desktop")["resources"]
    assert desktop["requests"]["memory"] == desktop["limits"]["memory"] == "32Gi"
    assert desktop["requests"]["cpu"] == desktop["limits"]["cpu"] == "12"
    assert "limit (the chart's default, 16Gi) was below the request you gave (32Gi)" in \
        rendered.notes


def test_negative_control_a_request_above_its_limit_is_found(chart):
    # the check above reads what it should: a pod as the chart rendered before the rule
    rendered = render(chart, cerit_values())
    desktop = rendered.container("desktop")
    desktop["resources"]["limits"]["memory"] = "4Gi"  # requests.memory: 8Gi
    rendered.container("spaceport")["resources"]["requests"]["cpu"] = "2100m"  # limit: 2
    found = requests_above_limits(rendered)
    assert {(c, r) for _, c, r, _, _ in found} == {("desktop", "memory"), ("spaceport", "cpu")}


# --- one way in, through spaceport -------------------------------------------------------------


def test_the_desktops_url_leads_to_spaceport_before_and_after_ready(chart):
    """Follow the rendered routing from the URL to a container: Ingress host and path ->
    Service port -> the pod's container port. It must end at spaceport (which shows progress,
    then proxies the desktop it is pointed at) and must do so while the pod is not Ready."""
    rendered = render(chart, portal_values())
    (ingress,) = rendered.of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = rendered.named("Service", backend["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    pod = rendered.pod
    targets = [
        c for c in pod.get("initContainers", []) + pod["containers"]
        if any(p["name"] == port["targetPort"] for p in c.get("ports", []))
    ]
    assert [c["name"] for c in targets] == ["spaceport"]
    spaceport = targets[0]
    env = env_of(spaceport)
    assert int(env["SPACEPORT_LISTEN"]["value"].rpartition(":")[2]) == named_port(spaceport, port["targetPort"])
    # before ready: the pod is not Ready for the whole stage-in; the Service routes anyway
    assert service["spec"]["publishNotReadyAddresses"] is True
    # after ready: spaceport proxies to the desktop container's port in the same pod
    desktop_port = named_port(rendered.container("desktop"), "novnc")
    assert env["SPACEPORT_DESKTOP_URL"]["value"] == f"http://127.0.0.1:{desktop_port}"
    # one host only: no separate progress host, no route that skips spaceport
    assert len(rendered.of_kind("Ingress")) == 1 and len(rendered.of_kind("Service")) == 1


def test_nothing_public_without_the_password_and_probes_without_it(chart):
    rendered = render(chart, portal_values())
    spaceport = rendered.container("spaceport")
    env = env_of(spaceport)
    assert env["SPACEPORT_AUTH_USER"]["value"] == "user"
    password_file = env["SPACEPORT_AUTH_PASSWORD_FILE"]["value"]
    mount = mounts_of(spaceport)["spaceport-secrets"]
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    items = {i["path"]: i["key"] for i in volumes["spaceport-secrets"]["secret"]["items"]}
    # the password file holds the VNC password, the convention of CERIT's desktop apps
    assert items[password_file.removeprefix(mount["mountPath"] + "/")] == "vnc-password"
    assert rendered.secret_data["vnc-password"] == PORTAL_SET["vnc.vncPassword"]
    # the kubelet's probes stay on the unauthenticated paths, with no credentials
    for probe in (spaceport["startupProbe"], spaceport["livenessProbe"]):
        assert probe["httpGet"]["path"] in ("/healthz", "/readyz")
        assert "httpHeaders" not in probe["httpGet"]
    # auth can be turned off (e.g. behind another authenticating proxy), and then is off
    off = env_of(render(chart, merged(portal_values(), {"auth": {"enabled": False}})).container("spaceport"))
    assert "SPACEPORT_AUTH_USER" not in off and "SPACEPORT_AUTH_PASSWORD_FILE" not in off


# --- the desktop's wrapper, run -------------------------------------------------------------


@pytest.fixture
def wrapper(chart, tmp_path):
    """The desktop container's command and environment from the rendered chart, ready to run
    as a real process: /mnt/shared mapped to a temporary folder, the image's entrypoint
    replaced by a stand-in that records that it ran."""
    if shutil.which("sh") is None:  # pragma: no cover - every POSIX system has one
        pytest.skip("no sh")
    desktop = render(chart, portal_values()).container("desktop")
    command = desktop["command"]
    assert command[:2] == ["/bin/sh", "-c"] and command[-1] == "/docker-entrypoint.sh"
    shared = tmp_path / "shared"
    shared.mkdir()
    ran = tmp_path / "entrypoint-ran"
    stand_in = tmp_path / "docker-entrypoint.sh"
    stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" > "{ran}"\n')
    stand_in.chmod(0o755)
    env = {e["name"]: e["value"] for e in desktop["env"] if "value" in e}
    ready = env["READY_FILE"]
    assert ready == "/mnt/shared/instance-status"
    env.update({
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "READY_FILE": str(shared / os.path.basename(ready)),
        "READY_POLL_SECONDS": "0.05",
    })
    argv = ["/bin/sh", *command[1:-1], str(stand_in), "--arg"]
    procs = []

    def start():
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start, shared / os.path.basename(ready), ran
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("content", [b"ok", b"ok\n"])
def test_the_wrapper_starts_the_entrypoint_only_once_ready(wrapper, content):
    start, ready, ran = wrapper
    proc = start()
    # no file, then not yet "ok": it waits, the entrypoint has not run
    time.sleep(0.5)
    ready.write_bytes(b"")
    time.sleep(0.3)
    ready.write_bytes(b"staging")
    time.sleep(0.3)
    assert proc.poll() is None and not ran.exists()
    # spaceport writes "ok" (CERIT's controller writes it without a newline)
    ready.write_bytes(content)
    assert _wait_for(ran.exists)
    assert proc.wait(timeout=10) == 0
    # exec'd with the image's arguments, the stand-in got them verbatim
    assert ran.read_text().splitlines()[1:] == ["--arg"]
    assert b"waiting for" in proc.stdout.read()


def test_the_wrapper_stops_at_once_on_sigterm_while_waiting(wrapper):
    # Kubernetes sends SIGTERM to PID 1; an untrapped shell would ignore it for the whole
    # grace period, which the final save needs
    start, ready, ran = wrapper
    proc = start()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 143
    assert not ran.exists()
