"""Rendering the Helm chart in deploy/helm/spaceport for the chart's tests.

The chart is rendered with Helm's own Go SDK (``helm-python-sdk``, no helm binary) and the
objects are validated with ``kubernetes-validate``; importing this module skips the calling
test module, saying so, when either is missing.

Also here: the value sets the tests install with, CERIT's among them, copied from CERIT's
own sources (the repository and path are named beside each).
"""

from __future__ import annotations

import base64
import copy
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


def _supported_kube_versions() -> tuple[str, ...]:
    """Every Kubernetes version kubernetes-validate has schemas for, from the chart's floor
    (1.29: native sidecars on by default) up."""
    floor = (1, 29)
    found = {v for v in kv_utils.all_versions() if tuple(map(int, v.split(".")[:2])) >= floor}
    return tuple(sorted(found, key=lambda v: tuple(map(int, v.split(".")))))


KUBE_VERSIONS = _supported_kube_versions()

# Distinctive values, so that finding one in a manifest can only mean it leaked there.
SECRETS = {
    "source_token": "MDAxNWxvY2F0aW9uIG9uZXpvbmUKMDAzYmlkZW50aWZpZXIgc3JjLXRva2Vu",
    "project_token": "MDAxNWxvY2F0aW9uIG9uZXpvbmUKMDAzYmlkZW50aWZpZXIgcHJqLXRva2Vu",
    "vnc_password": "Vnc-pa55word-7c1e",
    "api_token": "api-token-4b9d2f0e8a7c6b5d",
}

# Space ids as OneData writes them (32 hex digits).
SOURCE_SPACE = "3a4ba1c1d8f0b1e5a0f2c9d7e6b5a4c3"
PROJECT_SPACE = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ONEPROVIDER = "oneprovider.example.org"


def merged(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, recursively (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- native values, one set per way of reaching OneData ----------------------------------


def oneclient_values() -> dict:
    """A generic cluster that allows privileged pods: oneclient sidecars."""
    return {
        "onedata": {
            "mode": "oneclient",
            "host": ONEPROVIDER,
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
    """The same deployment with the spaces provided as existing claims."""
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


def cerit_values() -> dict:
    """CERIT's cluster, in the chart's own keys: the cerit profile, OneData through the
    platform's claims."""
    return {
        "profile": "cerit",
        "onedata": {
            "host": ONEPROVIDER,
            "source": {"spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
            "project": {"spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]},
        },
        "vnc": {"password": SECRETS["vnc_password"]},
        "spaceport": {"apiToken": SECRETS["api_token"]},
    }


VALUES = {"oneclient": oneclient_values, "pvc": pvc_values, "cerit": cerit_values}


# --- CERIT's own key sets -----------------------------------------------------------------

# CERIT-SC/scipion-portal scipo/web/rest.py (commit f6fe3dcc6f5613c6c3733dbcf75af321abefb829),
# api_instances_post: the helm_vars dict, key for key, with the request's values filled in.
# scipo/web/api/helm.py passes each as `helm install … --set KEY=VALUE`.
PORTAL_SET = {
    "instance.releaseChannel": "dev",
    "instance.prefix": "scipo",
    "instance.microk8s": "false",
    "instance.mincpu": "2",
    "instance.maxcpu": "8",
    "instance.minram": "2048Mi",
    "instance.maxram": "8192Mi",
    "instance.keepVolumes": "true",
    "vnc.useVncClient": "false",
    "vnc.vncPassword": "5f1d0c9a3b7e2a4c8d6e0f1a2b3c4d5e",  # secrets.token_hex(16)
    "od.dataset.host": ONEPROVIDER,
    "od.dataset.token": SECRETS["source_token"],
    "od.dataset.spaceId": SOURCE_SPACE,
    "od.dataset.spaceIdShort": SOURCE_SPACE[0:8],
    "od.project.host": ONEPROVIDER,
    "od.project.token": SECRETS["project_token"],
    "od.project.spaceId": PROJECT_SPACE,
    "od.project.spaceIdShort": PROJECT_SPACE[0:8],
}


def set_values(pairs: dict[str, str]) -> dict:
    """The values Helm builds from ``--set KEY=VALUE`` for each pair, typed the way Helm
    types them (``2`` is a number, ``true`` a boolean), with Helm's own parser."""
    out: dict = {}
    for key, value in pairs.items():
        out = merged(out, helm.parse_set_string(f"{key}={value}"))
    return out


def portal_values() -> dict:
    return set_values(PORTAL_SET)


# The seed's form: CERIT-SC/rancher-apps charts/scipion/v3.0.10/questions.yaml (commit
# 033e784ffab232d59fd5c879659ba37656446278), every variable answered; Rancher sends its
# `string` answers as strings. The defaults are the form's own.
SEED_FORM = {
    "master": {"vncPassword": SECRETS["vnc_password"]},
    "od": {
        "host": ONEPROVIDER,
        "source": {"spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
        "project": {"spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]},
    },
    "instance": {"mincpu": "2", "maxcpu": "8", "minram": "2048Mi", "maxram": "8192Mi"},
}

# CERIT's v1.0 form (rancher-apps charts/scipion/v1.0/questions.yaml) is not in the stored
# index (docs/CERIT.md, "CERIT facts the chart relies on", "Not confirmed"): these are the
# keys of the stored chart of the same generation (rancher-apps
# charts/scipion/v2.0/values.yaml, commit 0b50260b…: vnc.vncPassword,
# od.dataset.{host,token,spaceId}, od.project.*, instance.*) with the defaults ../shared/CERIT.md
# gives for that form (CPU 2/4, RAM 2Gi/4Gi, keep volumes on). Reconstructed, not copied.
V1_FORM = {
    "vnc": {"vncPassword": SECRETS["vnc_password"]},
    "od": {
        "dataset": {"host": ONEPROVIDER, "spaceId": SOURCE_SPACE, "token": SECRETS["source_token"]},
        "project": {"host": ONEPROVIDER, "spaceId": PROJECT_SPACE, "token": SECRETS["project_token"]},
    },
    "instance": {"mincpu": 2, "maxcpu": 4, "minram": "2Gi", "maxram": "4Gi", "keepVolumes": True},
}


# --- rendering ----------------------------------------------------------------------------


class Rendered:
    """One rendering of the chart: the raw manifests and the objects parsed from them."""

    def __init__(self, manifests: dict[str, str], release: str = RELEASE):
        self.release = release
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

    def named(self, kind: str, name: str) -> dict:
        (found,) = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found

    @property
    def pod(self) -> dict:
        return self.one("Deployment")["spec"]["template"]["spec"]

    def pod_templates(self) -> list[tuple[str, dict]]:
        """Every pod this rendering would run: (kind/name, pod spec)."""
        out = []
        for obj in self.objects:
            kind = obj["kind"]
            if kind == "Pod":
                out.append((f"Pod/{obj['metadata']['name']}", obj["spec"]))
            elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
                out.append((f"{kind}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]))
            elif kind == "CronJob":
                spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                out.append((f"CronJob/{obj['metadata']['name']}", spec))
        return out

    def container(self, name: str) -> dict:
        pod = self.pod
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c["name"] == name:
                return c
        raise AssertionError(f"no container {name!r} in the pod")

    @property
    def main_secret(self) -> dict:
        (found,) = [
            s for s in self.of_kind("Secret")
            if "cerit-onedata-secret" not in s["metadata"].get("labels", {})
        ]
        return found

    @property
    def onedata_secrets(self) -> list[dict]:
        return [
            s for s in self.of_kind("Secret")
            if s["metadata"].get("labels", {}).get("cerit-onedata-secret") == "yes"
        ]

    @staticmethod
    def decoded(secret: dict) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}

    @property
    def secret_data(self) -> dict[str, str]:
        return self.decoded(self.main_secret)


def render(chart, values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    return Rendered(chart.render(values, name=name, namespace=namespace), release=name)


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
