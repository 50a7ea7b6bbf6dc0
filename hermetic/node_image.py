"""Assemble a kind node image for Kubernetes from Debian packages and Go modules only.

    python3 -m hermetic.node_image            # build (cached stages), print the image name
    python3 -m hermetic.node_image --if-needed # only when no node image can be had otherwise:
                                               # HARNESS_NODE_IMAGE set, or kindest/node present
                                               # or pullable, means nothing to build

Stages (each cached by a content key under <cache>/stages/, see hermetic/stages.py):
  go-kubernetes   kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler
                  kube-proxy, one `go build` through a generated wrapper module
  go-etcd, go-coredns, go-crictl, go-cni-agent, pause   the other binaries
  rootfs-node, rootfs-slim                               debootstrapped Debian trees
  component-images   OCI layout with every image kubeadm, the kubelet and the manifests use
  node image         docker image: rootfs + binaries + node files, images imported into
                     containerd (namespace k8s.io) and committed
Nothing is pulled from a container registry. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hermetic import oci, rootfs, stages

HERE = Path(__file__).resolve().parent
NODE_FILES = HERE / "node"
K8S_COMMANDS = [
    "kubelet",
    "kubeadm",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
]
IMAGE_REPO = "incident-harness/node"
LABEL = "io.incident-harness.managed"


def _go_env() -> dict[str, str]:
    return {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}


def _describe_go(line: str) -> str | None:
    # `go build -v` prints each package as it compiles: show the latest one.
    return f"compiling {line}" if line and not line.startswith(("go: ", "#")) else None


def go_build(
    stage: str,
    out: Path,
    *,
    roots: dict[str, str],
    packages: list[str],
    ldflags: str = "-s -w",
    replaces: dict[str, str] | None = None,
    requires_from: Path | None = None,
) -> Path:
    """Build Go main packages of published modules through a generated wrapper module."""
    if not shutil.which("go"):
        stages.fail("Go is not installed", "install Go 1.24+ (Debian: golang from bookworm-backports, or go.dev/dl)")
    src = out / "src"
    src.mkdir()
    lines = [f"module incident-harness/build/{stage}", "", "go 1.24.0", ""]
    lines += [f"require {path} {version}" for path, version in roots.items()]
    if requires_from:  # pin every dependency to the versions the root module itself uses
        text = requires_from.read_text()
        lines += [f"require ({block})" for block in re.findall(r"^require \((.*?)^\)", text, re.S | re.M)]
    if replaces:
        lines += ["replace ("] + [f"\t{a} => {b}" for a, b in sorted(replaces.items())] + [")"]
    (src / "go.mod").write_text("\n".join(lines) + "\n")
    env = _go_env()
    stages.run(stage, ["go", "mod", "download", *roots], cwd=src, env=env)
    bindir = out / "bin"
    bindir.mkdir()
    stages.run(
        stage,
        ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(bindir) + "/", *packages],
        cwd=src,
        env=env,
        describe=_describe_go,
    )
    return bindir


def _module_gomod(path: str, version: str) -> Path:
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{path}@{version}"],
        capture_output=True,
        text=True,
        env={**os.environ, **_go_env()},
        check=False,
    )
    if result.returncode != 0:
        raise stages.StageFailed(
            "go-kubernetes",
            ["go", "mod", "download", f"{path}@{version}"],
            result.returncode,
            (result.stdout + result.stderr).splitlines(),
        )
    return Path(json.loads(result.stdout)["GoMod"])


def build_kubernetes(pins: dict[str, str]) -> Path:
    version, staging = pins["K8S_VERSION"], pins["K8S_STAGING_VERSION"]
    major, minor = version.lstrip("v").split(".")[:2]

    def build(out: Path) -> None:
        gomod = _module_gomod("k8s.io/kubernetes", version)
        # k8s.io/kubernetes replaces its staging modules with ./staging paths, which only work
        # inside its repository; point them at their published versions instead.
        staged = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging", gomod.read_text(), re.M)
        stamp = []
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            stamp += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
            ]
        go_build(
            "go-kubernetes",
            out,
            roots={"k8s.io/kubernetes": version},
            packages=[f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS],
            ldflags=" ".join(["-s", "-w", *stamp]),
            replaces={m: f"{m} {staging}" for m in staged},
            requires_from=gomod,
        )

    key = stages.content_key(version, staging, K8S_COMMANDS, go_build, build_kubernetes, _go_version())
    return stages.cached("go-kubernetes", key, build) / "bin"


def build_etcd(pins: dict[str, str]) -> Path:
    version = pins["ETCD_VERSION"]

    def build(out: Path) -> None:
        bindir = go_build(
            "go-etcd",
            out,
            roots={"go.etcd.io/etcd/server/v3": version, "go.etcd.io/etcd/etcdctl/v3": version},
            packages=["go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3"],
        )
        (bindir / "server").rename(bindir / "etcd")

    key = stages.content_key(version, go_build, build_etcd, _go_version())
    return stages.cached("go-etcd", key, build) / "bin"


def build_coredns(pins: dict[str, str]) -> Path:
    version = pins["COREDNS_VERSION"]

    def build(out: Path) -> None:
        go_build(
            "go-coredns", out, roots={"github.com/coredns/coredns": version}, packages=["github.com/coredns/coredns"]
        )

    key = stages.content_key(version, go_build, build_coredns, _go_version())
    return stages.cached("go-coredns", key, build) / "bin"


def build_crictl(pins: dict[str, str]) -> Path:
    version = pins["CRICTL_VERSION"]

    def build(out: Path) -> None:
        go_build(
            "go-crictl",
            out,
            roots={"sigs.k8s.io/cri-tools": version},
            packages=["sigs.k8s.io/cri-tools/cmd/crictl"],
            ldflags=f"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={version.lstrip('v')}",
        )

    key = stages.content_key(version, go_build, build_crictl, _go_version())
    return stages.cached("go-crictl", key, build) / "bin"


def build_local_go(stage: str, source: Path, name: str) -> Path:
    """A Go program of this repository (no dependencies), built statically."""

    def build(out: Path) -> None:
        (out / "bin").mkdir()
        stages.run(
            stage,
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "bin" / name), "."],
            cwd=source,
            env={"CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
        )

    key = stages.content_key(name, build_local_go, _go_version(), files=[source])
    return stages.cached(stage, key, build) / "bin" / name


def build_pause() -> Path:
    source = NODE_FILES / "pause" / "pause.c"

    def build(out: Path) -> None:
        if not shutil.which("gcc"):
            stages.fail("gcc is not installed", "apt-get install gcc libc6-dev")
        stages.run("pause", ["gcc", "-static", "-Os", "-o", str(out / "pause"), str(source)])
        stages.run("pause", ["strip", str(out / "pause")])

    return stages.cached("pause", stages.content_key(build_pause, files=[source]), build) / "pause"


_GO_VERSION: list[str] = []


def _go_version() -> str:
    if not _GO_VERSION:
        found = shutil.which("go")
        _GO_VERSION.append(
            subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip() if found else ""
        )
    return _GO_VERSION[0]


def component_images(pins: dict[str, str], parts: dict[str, Path]) -> tuple[Path, list[str]]:
    """One OCI layout tarball with every image the node runs, named as kubeadm expects."""
    k8s = pins["K8S_VERSION"]
    cni_tag = _cni_tag(parts)
    names = {
        "kube-apiserver": f"registry.k8s.io/kube-apiserver:{k8s}",
        "kube-controller-manager": f"registry.k8s.io/kube-controller-manager:{k8s}",
        "kube-scheduler": f"registry.k8s.io/kube-scheduler:{k8s}",
        "kube-proxy": f"registry.k8s.io/kube-proxy:{k8s}",
        "etcd": f"registry.k8s.io/etcd:{pins['ETCD_IMAGE_TAG']}",
        "coredns": f"registry.k8s.io/coredns/coredns:{pins['COREDNS_VERSION']}",
        "pause": f"registry.k8s.io/pause:{pins['PAUSE_IMAGE_TAG']}",
        "cni-agent": f"registry.k8s.io/incident-harness/cni-agent:{cni_tag}",
    }

    def build(out: Path) -> None:
        work = out / "layout"
        blobs = work / "blobs"
        layers = out / "layers"
        layers.mkdir(parents=True)
        base = oci.add_blob(blobs, parts["slim"])

        def bin_layer(name: str, files: dict[str, Path]) -> oci.Blob:
            return oci.add_blob(blobs, oci.files_layer(layers / f"{name}.tar", dict(files), {"tmp": 0o1777}))

        kbin = parts["kubernetes"]
        images = [
            oci.Image(names[c], [base, bin_layer(c, {f"usr/local/bin/{c}": kbin / c})])
            for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
        ]
        images.append(
            oci.Image(
                names["etcd"],
                [
                    base,
                    bin_layer(
                        "etcd",
                        {
                            "usr/local/bin/etcd": parts["etcd"] / "etcd",
                            "usr/local/bin/etcdctl": parts["etcd"] / "etcdctl",
                        },
                    ),
                ],
            )
        )
        images.append(
            oci.Image(
                names["coredns"],
                [base, bin_layer("coredns", {"coredns": parts["coredns"] / "coredns"})],
                entrypoint=["/coredns"],
            )
        )
        images.append(oci.Image(names["pause"], [bin_layer("pause", {"pause": parts["pause"]})], entrypoint=["/pause"]))
        images.append(
            oci.Image(
                names["cni-agent"],
                [base, bin_layer("cni-agent", {"usr/local/bin/cni-agent": parts["cni-agent"]})],
                entrypoint=["/usr/local/bin/cni-agent"],
            )
        )
        stages.PROGRESS.say("component-images", f"writing {len(images)} images")
        oci.write_layout(out / "images.tar", work, images)
        shutil.rmtree(work)
        shutil.rmtree(layers)
        (out / "names.json").write_text(json.dumps(sorted(names.values())))

    key = stages.content_key(
        names, component_images, oci.write_layout, oci.files_layer, *[_stage_id(p) for p in parts.values()]
    )
    out = stages.cached("component-images", key, build)
    return out / "images.tar", json.loads((out / "names.json").read_text())


def _stage_id(path: Path) -> str:
    """The cache key directory a stage output lives in (identifies its content)."""
    for parent in [path, *path.parents]:
        if (parent / ".complete").exists():
            return f"{parent.parent.name}/{parent.name}"
    return str(path.name)


def _cni_tag(parts: dict[str, Path]) -> str:
    return "v0-" + _stage_id(parts["cni-agent"]).split("/")[-1][:12]


def render_node_files(dest: Path, pins: dict[str, str], parts: dict[str, Path]) -> None:
    """Copy hermetic/node/rootfs and the manifests, filling in @PLACEHOLDERS@."""
    values = {
        "PAUSE_IMAGE_TAG": pins["PAUSE_IMAGE_TAG"],
        "CNI_AGENT_TAG": _cni_tag(parts),
    }

    def fill(text: str) -> str:
        for k, v in values.items():
            text = text.replace(f"@{k}@", v)
        if re.search(r"@[A-Z_]+@", text):
            raise ValueError(f"unfilled placeholder in node files: {re.search(r'@[A-Z_]+@', text)}")
        return text

    for src in sorted((NODE_FILES / "rootfs").rglob("*")):
        target = dest / "rootfs" / src.relative_to(NODE_FILES / "rootfs")
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(fill(src.read_text()))
            target.chmod(src.stat().st_mode & 0o777)
    manifests = dest / "rootfs" / "kind" / "manifests"
    manifests.mkdir(parents=True)
    for src in (NODE_FILES / "manifests").glob("*.yaml"):
        (manifests / src.name).write_text(fill(src.read_text()))
    (dest / "rootfs" / "kind" / "version").write_text(pins["K8S_VERSION"])


DOCKERFILE = """\
FROM {base}
COPY rootfs/ /
COPY bin/kubelet bin/kubeadm bin/kubectl /usr/bin/
COPY bin/crictl /usr/local/bin/
# Units that have no business in a node container, or that would change the host kernel's
# state (binfmt_misc is kernel-wide), are masked; containerd and the kubelet start at boot.
RUN systemctl enable containerd.service kubelet.service \\
 && systemctl mask systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \\
      proc-sys-fs-binfmt_misc.mount getty@tty1.service console-getty.service \\
      systemd-modules-load.service sys-kernel-debug.mount sys-kernel-tracing.mount \\
      sys-kernel-config.mount dev-hugepages.mount systemd-remount-fs.service \\
      systemd-udevd.service systemd-udev-trigger.service systemd-firstboot.service \\
 && systemctl set-default multi-user.target \\
 && mkdir -p /etc/cni/net.d /var/lib/kubelet /etc/kubernetes/manifests
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
"""


def _docker(*args: str, check: bool = True, stage: str = "node-image") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise stages.StageFailed(
            stage, ["docker", *args], result.returncode, (result.stdout + result.stderr).splitlines()
        )
    return result


def image_exists(ref: str) -> bool:
    return _docker("image", "inspect", ref, check=False).returncode == 0


def node_image(pins: dict[str, str], parts: dict[str, Path], images_tar: Path, names: list[str]) -> str:
    key = stages.content_key(
        DOCKERFILE,
        node_image,
        render_node_files,
        *[_stage_id(p) for p in parts.values()],
        _stage_id(images_tar),
        files=[NODE_FILES / "rootfs", NODE_FILES / "manifests"],
    )
    ref = f"{IMAGE_REPO}:{pins['K8S_VERSION']}-{key[:12]}"
    if image_exists(ref):
        stages.PROGRESS.say("node-image", f"cached ({ref})")
        return ref
    stages.PROGRESS.say("node-image", f"assembling {ref}")
    base = f"incident-harness/node-rootfs:{_stage_id(parts['rootfs']).split('/')[-1]}"
    if not image_exists(base):
        _docker("import", "--change", f"LABEL {LABEL}=true", str(parts["rootfs"]), base)
    with tempfile.TemporaryDirectory(prefix="node-image-") as tmp:
        ctx = Path(tmp)
        render_node_files(ctx, pins, parts)
        (ctx / "bin").mkdir()
        for name in ("kubelet", "kubeadm", "kubectl"):
            shutil.copy2(parts["kubernetes"] / name, ctx / "bin" / name)
        shutil.copy2(parts["crictl"] / "crictl", ctx / "bin" / "crictl")
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        staged = f"incident-harness/node-staging:{key[:12]}"
        stages.run(
            "node-image",
            ["docker", "build", "--label", f"{LABEL}=true", "-t", staged, str(ctx)],
            env={"DOCKER_BUILDKIT": "0"},
            describe=lambda line: line if line.startswith("Step ") else None,
        )
    container = f"incident-harness-node-build-{key[:12]}"
    _docker("rm", "-f", container, check=False)
    try:
        # containerd runs in a privileged container of the staged image, imports every
        # image (not unpacked: the CRI unpacks on first use), and the result is committed.
        _docker(
            "run",
            "-d",
            "--name",
            container,
            "--privileged",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/tmp",
            "--label",
            f"{LABEL}=true",
            "-v",
            f"{images_tar}:/kind/images.tar:ro",
            "--entrypoint",
            "/usr/bin/containerd",
            staged,
        )
        _wait_containerd(container)
        stages.run(
            "node-image",
            [
                "docker",
                "exec",
                container,
                "ctr",
                "--namespace=k8s.io",
                "images",
                "import",
                "--all-platforms",
                "--no-unpack",
                "/kind/images.tar",
            ],
        )
        listed = _docker("exec", container, "ctr", "--namespace=k8s.io", "images", "ls", "-q").stdout.split()
        missing = sorted(set(names) - set(listed))
        if missing:
            raise stages.StageFailed("node-image", ["ctr", "images", "ls"], 1, [f"missing after import: {missing}"])
        _docker("stop", "--time", "30", container)
        image_id = _docker(
            "commit",
            "--change",
            'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
            "--change",
            "CMD []",
            "--change",
            f"LABEL {LABEL}=true",
            "--change",
            f"LABEL io.incident-harness.node-key={key}",
            container,
        ).stdout.strip()
    finally:
        _docker("rm", "-f", container, check=False)
    _docker("tag", image_id, ref)  # the tag is the completeness marker: applied last
    listed = _docker("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    for old in listed:  # node images of earlier recipes; one a cluster still uses stays (rmi refuses)
        if old != ref and not old.endswith(f":{pins['K8S_VERSION']}"):
            _docker("rmi", old, check=False)
    _docker("rmi", staged, check=False)
    stages.PROGRESS.say("node-image", f"built {ref}")
    return ref


def _wait_containerd(container: str, seconds: int = 60) -> None:
    """ctr itself waits (bounded) until containerd's socket answers."""
    result = _docker("exec", container, "ctr", f"--connect-timeout={seconds}s", "version", check=False)
    if result.returncode != 0:
        logs = _docker("logs", container, check=False)
        raise stages.StageFailed(
            "node-image",
            ["ctr", "version"],
            result.returncode,
            [*(logs.stdout + logs.stderr).splitlines(), "containerd did not start"],
        )


def build_all() -> str:
    pins = stages.read_versions()
    parts: dict[str, Path] = {}
    parts["rootfs"] = rootfs.node_rootfs(pins)
    parts["slim"] = rootfs.slim_rootfs(pins)
    parts["kubernetes"] = build_kubernetes(pins)
    parts["etcd"] = build_etcd(pins)
    parts["coredns"] = build_coredns(pins)
    parts["crictl"] = build_crictl(pins)
    parts["cni-agent"] = build_local_go("go-cni-agent", NODE_FILES / "cni-agent", "cni-agent")
    parts["pause"] = build_pause()
    images_tar, names = component_images(pins, parts)
    ref = node_image(pins, parts, images_tar, names)
    # kubectl of the same version for the host, and a stable alias for the newest build.
    kubectl = stages.cache_root() / "bin" / f"kubectl-{pins['K8S_VERSION']}"
    kubectl.parent.mkdir(parents=True, exist_ok=True)
    if not kubectl.exists():
        shutil.copy2(parts["kubernetes"] / "kubectl", str(kubectl) + ".tmp")
        Path(str(kubectl) + ".tmp").rename(kubectl)
    _docker("tag", ref, f"{IMAGE_REPO}:{pins['K8S_VERSION']}")
    return ref


def _registry_image_available() -> str:
    """Why no registry-free image is needed, or "" when it is."""
    forced = os.environ.get("HARNESS_NODE_IMAGE")
    if forced:
        return f"HARNESS_NODE_IMAGE={forced} is forced"
    kindest = stages.read_versions()["KINDEST_NODE_IMAGE"]
    if image_exists(kindest):
        return f"{kindest} is present"
    try:
        pulled = subprocess.run(["docker", "pull", kindest], capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return ""
    if pulled.returncode == 0:
        return f"{kindest} was pulled"
    why = (pulled.stderr.strip().splitlines() or ["pull failed"])[-1]
    stages.PROGRESS.say("node-image", f"{kindest} cannot be pulled ({why}): using the registry-free image")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m hermetic.node_image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--if-needed",
        action="store_true",
        help="build only when HARNESS_NODE_IMAGE is unset and kindest/node cannot be had",
    )
    args = parser.parse_args(argv)
    if args.if_needed and (reason := _registry_image_available()):
        print(f"node image: {reason}; nothing to build")
        return 0
    try:
        ref = build_all()
    except stages.StageFailed as exc:
        print(f"node-image: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("node-image: interrupted; completed stages stay cached, partial ones were removed", file=sys.stderr)
        return 130
    print(f"node image: {ref} (alias {IMAGE_REPO}:{stages.read_versions()['K8S_VERSION']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
