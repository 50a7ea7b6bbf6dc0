"""A tiny static HTTP server image for quick cluster tests, for linux/amd64 and linux/arm64.

    python3 -m hermetic.images.busybox_httpd --platform linux/arm64   # prints the image ref

FROM scratch in effect: Debian's busybox-static binary as /bin/busybox (merged /usr: /bin ->
usr/bin) and a /www tree, run as `busybox httpd -f -p 8080 -h /www` by user 65534.
  GET /index.html, /healthz  static "ok" pages
  GET /cgi-bin/arch           the container's `uname -m` (a busybox sh CGI script)
On a node of another architecture it fails at once with `exec /bin/busybox: exec format error`,
the smallest reproduction of the incident. Tag: incident-harness/busybox-httpd:<version>-<arch>-<key>.
"""

from __future__ import annotations

from pathlib import Path

from hermetic.images.debimage import BaseImage, ExtraFile, ImageRecipe, ensure_image, main_for

INDEX = b"<!doctype html><title>busybox httpd</title><p>ok: served by busybox httpd (incident-harness)\n"
ARCH_CGI = b'#!/bin/busybox sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\n/bin/busybox uname -m\n'

RECIPE = ImageRecipe(
    name="busybox-httpd",
    repository="incident-harness/busybox-httpd",
    tag_prefix="1.35",
    roots=("busybox-static",),
    keep_only=("usr/bin/busybox", "usr/share/doc/busybox-static/copyright"),
    extras=(
        ExtraFile("www/index.html", data=INDEX),
        ExtraFile("www/healthz", data=b"ok\n"),
        ExtraFile("www/cgi-bin/arch", data=ARCH_CGI, mode=0o755),
        ExtraFile("tmp", "dir", mode=0o1777),
    ),
    env=("PATH=/usr/bin:/bin",),
    cmd=("/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"),
    user="65534:65534",
    exposed_ports=("8080/tcp",),
    labels={"org.opencontainers.image.title": "busybox httpd (registry-free)"},
    sources=(Path(__file__),),
)


def ensure_busybox_httpd(platform: str, *, refresh: bool = False, force: bool = False) -> BaseImage:
    """The busybox httpd image for platform, built unless already present."""
    return ensure_image(RECIPE, platform, refresh=refresh, force=force)


def main(argv: list[str] | None = None) -> int:
    return main_for(RECIPE, argv, "Build the registry-free busybox httpd image from Debian's busybox-static.")


if __name__ == "__main__":
    raise SystemExit(main())
