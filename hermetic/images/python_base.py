"""A registry-free stand-in for python:3.11-slim, for linux/amd64 and linux/arm64.

    python3 -m hermetic.images.python_base --platform linux/arm64   # prints the image ref

Debian bookworm's python3.11 (python3.11-minimal + libpython3.11-stdlib and their libraries:
libc6, libssl3, libffi8, zlib1g, libexpat1, ...) with /usr/local/bin/python3 -> /usr/bin/python3.11,
so Dockerfiles written for the official image (whose python is /usr/local/bin/python3) work
unchanged. No shell, no package manager: images built FROM it cannot RUN anything, which is the
point (nothing foreign ever executes while building an image for another architecture).
Tag: incident-harness/python-base:3.11-<arch>-<content key>. See debimage.py for the method.
"""

from __future__ import annotations

from pathlib import Path

from hermetic.images.debimage import BaseImage, ExtraFile, ImageRecipe, ensure_image, main_for

PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    "app:x:10001:10001:app:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\napp:x:10001:\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nservices: files\n"

RECIPE = ImageRecipe(
    name="python-base",
    repository="incident-harness/python-base",
    tag_prefix="3.11",
    roots=("python3.11-minimal", "libpython3.11-stdlib", "libssl3"),  # libssl3: the ssl module
    # Only a package manager needs these; nothing in python3.11's runtime does.
    prune=frozenset(
        {
            "dpkg",
            "tar",
            "install-info",
            "debconf",
            "perl-base",
            "perl",
            "perl-modules-5.36",
            "libperl5.36",
            "mime-support",
        }
    ),
    extras=(
        ExtraFile("etc/passwd", data=PASSWD.encode()),
        ExtraFile("etc/group", data=GROUP.encode()),
        ExtraFile("etc/nsswitch.conf", data=NSSWITCH.encode()),
        ExtraFile("tmp", "dir", mode=0o1777),
        ExtraFile("root", "dir", mode=0o700),
        ExtraFile("usr/bin/python3", "symlink", target="python3.11", mode=0o777),
        ExtraFile("usr/local/bin/python3", "symlink", target="/usr/bin/python3.11", mode=0o777),
        ExtraFile("usr/local/bin/python", "symlink", target="python3", mode=0o777),
    ),
    env=(
        "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
    ),
    cmd=("python3",),
    labels={
        "org.opencontainers.image.title": "python-base 3.11 (registry-free)",
        "org.opencontainers.image.description": "Debian python3.11 without shell or package manager, "
        "built by hermetic/images/python_base.py",
    },
    sources=(Path(__file__),),
)


def ensure_python_base(platform: str, *, refresh: bool = False, force: bool = False) -> BaseImage:
    """The base image for platform ("linux/amd64", "linux/arm64"), built unless already present."""
    return ensure_image(RECIPE, platform, refresh=refresh, force=force)


def main(argv: list[str] | None = None) -> int:
    return main_for(RECIPE, argv, "Build the registry-free python:3.11-slim stand-in from Debian packages.")


if __name__ == "__main__":
    raise SystemExit(main())
