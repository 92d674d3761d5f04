"""Pod Security "restricted", checked on every pod the chart renders.

CERIT-SC enforces the "restricted" Pod Security Standard on every user namespace
(kube-docs securitycontext.mdx); a pod that breaks one rule is refused there. No API server
runs on these machines, so `restricted_violations` below implements the standard's rules
(kubernetes.io/docs/concepts/security/pod-security-standards, baseline + restricted, the
"latest" version) over a pod spec, init containers, native sidecars and ephemeral
containers included, plus this project's own rule that every container runs under an
explicit non-zero uid. It is applied to every pod of every mode that claims the profile
(cerit, pvc: with the chart's own keys and with CERIT's), and shown to fail on pods that break
it: a privileged container, a missing `drop: [ALL]`, a hostPath volume, and more. The
oneclient mode does not claim it, and the checker says so.
"""

from __future__ import annotations

import copy

import pytest

from chart_helpers import (
    CHART,
    PORTAL_SET,
    SEED_FORM,
    V1_FORM,
    cerit_values,
    helm,
    merged,
    oneclient_values,
    portal_values,
    pvc_values,
    render,
)

# Baseline: capabilities a container may add; restricted: only this one.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(pod: dict) -> list[dict]:
    return (
        pod.get("initContainers", []) + pod.get("containers", []) + pod.get("ephemeralContainers", [])
    )


def restricted_violations(pod: dict, annotations: dict | None = None) -> list[str]:
    """Every rule of Pod Security "restricted" the pod spec breaks, as readable strings."""
    out: list[str] = []
    psc = pod.get("securityContext", {})
    # --- baseline ---
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"pod: {field} is set")
    if psc.get("windowsOptions", {}).get("hostProcess"):
        out.append("pod: hostProcess")
    for name in (s["name"] for s in psc.get("sysctls", [])):
        if name not in SAFE_SYSCTLS:
            out.append(f"pod: unsafe sysctl {name}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            out.append(f"volume {volume['name']}: hostPath")
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: kind {sorted(kinds)} not allowed")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if value != "runtime/default" and not value.startswith("localhost/"):
                out.append(f"pod: AppArmor annotation {key}={value}")

    def check_common(where: str, sc: dict) -> None:
        apparmor = sc.get("appArmorProfile", {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}: appArmorProfile {apparmor}")
        selinux = sc.get("seLinuxOptions", {})
        if selinux.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}: seLinuxOptions.type {selinux['type']}")
        if selinux.get("user") or selinux.get("role"):
            out.append(f"{where}: seLinuxOptions user/role set")
        if sc.get("seccompProfile", {}).get("type") == "Unconfined":
            out.append(f"{where}: seccompProfile Unconfined")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser 0")

    check_common("pod", psc)
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = psc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
    pod_uid = psc.get("runAsUser")
    for c in _containers(pod):
        where = f"container {c['name']}"
        sc = c.get("securityContext", {})
        check_common(where, sc)
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            out.append(f"{where}: hostProcess")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount {sc['procMount']}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
        caps = sc.get("capabilities", {})
        added = set(caps.get("add", []))
        if not added <= BASELINE_CAPABILITIES:
            out.append(f"{where}: adds capabilities {sorted(added - BASELINE_CAPABILITIES)}")
        # --- restricted ---
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in caps.get("drop", []):
            out.append(f"{where}: capabilities.drop lacks ALL")
        if not added <= RESTRICTED_CAPABILITIES:
            out.append(f"{where}: adds capabilities {sorted(added - RESTRICTED_CAPABILITIES)}")
        nonroot = sc.get("runAsNonRoot", pod_nonroot if pod_nonroot else None)
        if nonroot is not True:
            out.append(f"{where}: runAsNonRoot is not true")
        seccomp = sc.get("seccompProfile", {}).get("type")
        if not (seccomp in ("RuntimeDefault", "Localhost") or (seccomp is None and pod_seccomp)):
            out.append(f"{where}: seccompProfile is neither RuntimeDefault nor Localhost")
        # this project's rule: an explicit non-zero uid, so non-root is not left to the image
        uid = sc.get("runAsUser", pod_uid)
        if not isinstance(uid, int) or uid <= 0:
            out.append(f"{where}: no explicit non-zero runAsUser")
    return out


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


# Every value set that claims the restricted profile: the chart's keys and CERIT's, both
# modes without privileges, and the options that add containers or volumes.
RESTRICTED_CASES = {
    "cerit (chart keys)": cerit_values,
    "cerit, CERIT's portal": lambda: portal_values(),
    "cerit, the seed's form": lambda: copy.deepcopy(SEED_FORM),
    "cerit, CERIT's v1.0 form": lambda: copy.deepcopy(V1_FORM),
    "cerit, source in background, no auth": lambda: merged(
        cerit_values(), {"spaceport": {"sourceInBackground": True}, "auth": {"enabled": False}}
    ),
    "pvc": pvc_values,
    "pvc in the cerit profile": lambda: merged(pvc_values(), {"profile": "cerit"}),
    "pvc without /dev/shm": lambda: merged(pvc_values(), {"desktop": {"shmSize": ""}}),
}


@pytest.mark.parametrize("case", sorted(RESTRICTED_CASES))
def test_every_pod_passes_the_restricted_profile(chart, case):
    rendered = render(chart, RESTRICTED_CASES[case]())
    pods = rendered.pod_templates()
    assert pods, "nothing to check"
    for where, pod in pods:
        # the checker sees every container, native sidecars included
        assert any(c.get("restartPolicy") == "Always" for c in pod.get("initContainers", []))
        assert restricted_violations(pod) == [], where


def test_the_portals_set_is_the_one_checked():
    # the portal's case above is CERIT's exact key set, not a subset
    keys = set()

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(f"{prefix}{k}")

    walk(RESTRICTED_CASES["cerit, CERIT's portal"]())
    assert keys == set(PORTAL_SET)


def test_oneclient_mode_is_reported_as_not_restricted(chart):
    """oneclient mode runs privileged root sidecars: the checker must say so, and the chart
    documents that the mode needs a namespace whose level is "privileged"."""
    rendered = render(chart, oneclient_values())
    ((_, pod),) = rendered.pod_templates()
    violations = restricted_violations(pod)
    for name in ("oneclient-source", "oneclient-project"):
        assert f"container {name}: privileged" in violations
        assert f"container {name}: runAsUser 0" in violations
        assert f"container {name}: runAsNonRoot is not true" in violations
        assert f"container {name}: capabilities.drop lacks ALL" in violations
    # nothing else in that pod breaks the profile
    assert all("oneclient-" in v for v in violations), violations
    readme = " ".join((CHART / "README.md").read_text().split())
    assert "needs a namespace whose Pod Security level is `privileged`" in readme


def _cerit_pod(chart) -> dict:
    ((_, pod),) = render(chart, cerit_values()).pod_templates()
    assert restricted_violations(pod) == []
    return pod


def _container(pod: dict, name: str) -> dict:
    (found,) = [c for c in _containers(pod) if c["name"] == name]
    return found


# Negative controls: each breaks one rule in a pod that passes, and must be caught.
def _privileged(pod):
    _container(pod, "desktop")["securityContext"]["privileged"] = True


def _no_drop_all(pod):
    del _container(pod, "desktop")["securityContext"]["capabilities"]["drop"]


def _sidecar_keeps_capabilities(pod):
    # spaceport is a native sidecar (an init container): it is checked too
    _container(pod, "spaceport")["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}


def _host_path(pod):
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})


def _root_uid(pod):
    _container(pod, "spaceport")["securityContext"]["runAsUser"] = 0


def _escalation(pod):
    _container(pod, "desktop")["securityContext"]["allowPrivilegeEscalation"] = True


def _unconfined(pod):
    _container(pod, "desktop")["securityContext"]["seccompProfile"] = {"type": "Unconfined"}


def _no_seccomp_anywhere(pod):
    del pod["securityContext"]["seccompProfile"]
    for c in _containers(pod):
        c["securityContext"].pop("seccompProfile", None)


def _host_network(pod):
    pod["hostNetwork"] = True


def _host_port(pod):
    _container(pod, "desktop")["ports"][0]["hostPort"] = 5901


def _adds_sys_admin(pod):
    _container(pod, "desktop")["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]


def _root_allowed(pod):
    _container(pod, "desktop")["securityContext"]["runAsNonRoot"] = False


def _nfs_volume(pod):
    pod["volumes"].append({"name": "nfs", "nfs": {"server": "nfs.example.org", "path": "/"}})


def _extra_init_container(pod):
    pod["initContainers"].insert(0, {"name": "chown", "image": "busybox", "securityContext": {}})


NEGATIVE_CONTROLS = {
    "a privileged container": (_privileged, "container desktop: privileged"),
    "a missing drop: [ALL]": (_no_drop_all, "container desktop: capabilities.drop lacks ALL"),
    "a native sidecar without drop: [ALL]": (
        _sidecar_keeps_capabilities, "container spaceport: capabilities.drop lacks ALL",
    ),
    "a hostPath volume": (_host_path, "volume host: hostPath"),
    "root in a sidecar": (_root_uid, "container spaceport: runAsUser 0"),
    "privilege escalation": (_escalation, "container desktop: allowPrivilegeEscalation is not false"),
    "an unconfined seccomp profile": (_unconfined, "container desktop: seccompProfile Unconfined"),
    "no seccomp profile at all": (
        _no_seccomp_anywhere, "container spaceport: seccompProfile is neither RuntimeDefault nor Localhost",
    ),
    "the host's network": (_host_network, "pod: hostNetwork is set"),
    "a host port": (_host_port, "container desktop: hostPort 5901"),
    "an added capability": (_adds_sys_admin, "container desktop: adds capabilities ['SYS_ADMIN']"),
    "runAsNonRoot false": (_root_allowed, "container desktop: runAsNonRoot is not true"),
    "a volume kind restricted forbids": (_nfs_volume, "volume nfs: kind ['nfs'] not allowed"),
    "an init container with no security context": (
        _extra_init_container, "container chown: allowPrivilegeEscalation is not false",
    ),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE_CONTROLS))
def test_the_checker_catches_a_broken_pod(chart, case):
    breaks, expected = NEGATIVE_CONTROLS[case]
    pod = copy.deepcopy(_cerit_pod(chart))
    breaks(pod)
    violations = restricted_violations(pod)
    assert expected in violations, violations
