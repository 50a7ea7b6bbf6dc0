"""Debian root filesystems made with debootstrap, as tarballs (stdlib only)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hermetic import stages

# The node: systemd as PID 1, containerd + runc for pods, CNI plugins, and the tools
# kubeadm, the kubelet and kind call inside a node.
NODE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "iproute2",
    "ethtool",
    "socat",
    "conntrack",
    "ebtables",
    "kmod",
    "mount",
    "util-linux",
    "procps",
    "ca-certificates",
    "libseccomp2",
    "bash",
    "less",
    "tar",
    "gzip",
]

# The base layer of the component images (kube-proxy needs iptables and conntrack there).
SLIM_PACKAGES = ["iptables", "conntrack", "iproute2", "ca-certificates"]


def debootstrap_tarball(stage: str, out: Path, packages: list[str], pins: dict[str, str]) -> Path:
    """debootstrap a minbase bookworm with the packages, clean it, and tar it to out/rootfs.tar."""
    if not shutil.which("debootstrap"):
        stages.fail("debootstrap is not installed", "apt-get install debootstrap (or run 'make setup')")
    root = out / "rootfs"
    debs = stages.cache_root() / "debs" / pins["DEBIAN_SUITE"]
    debs.mkdir(parents=True, exist_ok=True)
    stages.run(
        stage,
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--cache-dir={debs}",
            pins["DEBIAN_SUITE"],
            str(root),
            pins["DEBIAN_MIRROR"],
        ],
        describe=lambda line: line if line.startswith("I: ") else None,
    )
    # Make it a clean image: no apt lists or caches, no host identity.
    for sub in ["var/lib/apt/lists", "var/cache/apt/archives", "var/log"]:
        target = root / sub
        if target.is_dir():
            for item in target.iterdir():
                if item.is_file():
                    item.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    (root / "etc/hostname").write_text("")
    tarball = out / "rootfs.tar"
    stages.run(stage, ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."])
    shutil.rmtree(root)
    return tarball


def node_rootfs(pins: dict[str, str]) -> Path:
    key = stages.content_key(NODE_PACKAGES, pins["DEBIAN_SUITE"], debootstrap_tarball)
    return stages.cached("rootfs-node", key, lambda d: _build(d, "rootfs-node", NODE_PACKAGES, pins)) / "rootfs.tar"


def slim_rootfs(pins: dict[str, str]) -> Path:
    key = stages.content_key(SLIM_PACKAGES, pins["DEBIAN_SUITE"], debootstrap_tarball)
    return stages.cached("rootfs-slim", key, lambda d: _build(d, "rootfs-slim", SLIM_PACKAGES, pins)) / "rootfs.tar"


def _build(out: Path, stage: str, packages: list[str], pins: dict[str, str]) -> None:
    debootstrap_tarball(stage, out, packages, pins)
