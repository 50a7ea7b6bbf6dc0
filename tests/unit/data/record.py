#!/usr/bin/env python3
"""Record pods, events and container logs from a real cluster as unit-test data.

Writes tests/unit/data/recorded/<name>/:
  pods.json      the PodList as the API returns it (metadata.managedFields removed, as kubectl does)
  events.json    the namespace's EventList
  logs/<pod>/<container>.current.log and .previous.log (when the API has them)
  watch.jsonl    with --watch: every watch event of pods and events, one JSON object a line:
                 {"t": seconds since start, "stream": "pods"|"events", "type": "ADDED"..., "object": {...}}
  manifest.yaml  with --apply: what was applied
  README.md      how it was recorded: cluster and kubelet versions, date, command

Example (a namespace of its own, created and deleted by the script):

  python tests/unit/data/record.py --kubeconfig KUBECONFIG \\
      --namespace rec-crashloop --create-namespace --delete-namespace \\
      --apply tests/unit/data/recorded/_manifests/deployment.yaml \\
      --set NAME=orders-api --set IMAGE=orders-api:linux-arm64-TAG --set NODE_ARCH=amd64 \\
      --set PULL_POLICY=Never --selector app=orders-api --until crash_loop --min-restarts 2 \\
      --watch 120 crashloop-exec-format
"""

from __future__ import annotations

import argparse
import json
import shlex
import string
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from kubernetes import client, config, utils, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from harness.outcomes import Outcome, classify_pod, classify_workload  # noqa: E402

TEMPLATE_DEFAULTS = {
    "NAME": "orders-api",
    "NODE_ARCH": "amd64",
    "PULL_POLICY": "IfNotPresent",
    "PORT": "8000",
    "READY_PATH": "/readyz",
    "LIVE_PATH": "/healthz",
}


def _raw(resp: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resp.data or b"{}")
    for item in data.get("items") or []:
        item.get("metadata", {}).pop("managedFields", None)
    return data


def _log(core: client.CoreV1Api, ns: str, pod: str, container: str, previous: bool) -> str | None:
    try:
        resp: Any = core.read_namespaced_pod_log(
            pod, ns, container=container, previous=previous, _preload_content=False, _request_timeout=30
        )
    except ApiException as exc:
        if exc.status in (400, 404):
            return None
        raise
    text: str = resp.data.decode("utf-8", "replace")
    return text


class Recorder:
    """Watches pods and events from the current resourceVersion, appending to watch.jsonl lines."""

    def __init__(self, core: client.CoreV1Api, ns: str, selector: str, seconds: float) -> None:
        self.core, self.ns, self.selector = core, ns, selector
        self.deadline = time.monotonic() + seconds
        self.start = time.monotonic()
        self.lines: list[dict[str, Any]] = []
        self.pods: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.watches: list[Any] = []

    def _run(self, stream: str, fn: Any, rv: str, **kwargs: Any) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            w = watch.Watch()
            self.watches.append(w)
            remaining = max(1, int(self.deadline - time.monotonic()) + 1)
            try:
                for ev in w.stream(fn, self.ns, resource_version=rv, timeout_seconds=remaining, **kwargs):
                    obj = ev["raw_object"]
                    obj.get("metadata", {}).pop("managedFields", None)
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    with self.lock:
                        self.lines.append(
                            {
                                "t": round(time.monotonic() - self.start, 3),
                                "stream": stream,
                                "type": ev["type"],
                                "object": obj,
                            }
                        )
                        if stream == "pods":
                            name = obj["metadata"]["name"]
                            if ev["type"] == "DELETED":
                                self.pods.pop(name, None)
                            else:
                                self.pods[name] = obj
                    if self.stop.is_set():
                        return
            except ApiException as exc:
                if exc.status != 410 or self.stop.is_set():
                    raise
                rv = _raw(fn(self.ns, _preload_content=False, **kwargs))["metadata"]["resourceVersion"]
            except Exception:
                if self.stop.is_set():
                    return
                raise

    def begin(self) -> None:
        endpoints: list[tuple[str, Any, dict[str, str]]] = [
            ("pods", self.core.list_namespaced_pod, {"label_selector": self.selector} if self.selector else {}),
            ("events", self.core.list_namespaced_event, {}),
        ]
        for stream, fn, kwargs in endpoints:
            listed = _raw(fn(self.ns, _preload_content=False, **kwargs))
            for item in listed.get("items") or []:
                self.lines.append({"t": 0.0, "stream": stream, "type": "ADDED", "object": item})
                if stream == "pods":
                    self.pods[item["metadata"]["name"]] = item
            rv = listed["metadata"]["resourceVersion"]
            t = threading.Thread(target=self._run, args=(stream, fn, rv), kwargs=kwargs, daemon=True)
            t.start()
            self.threads.append(t)

    def end(self) -> None:
        self.stop.set()
        for w in self.watches:
            w.stop()
        for t in self.threads:
            t.join(timeout=5)


def _scrub_command(argv: list[str]) -> str:
    """The command line, without this machine's paths (the kubeconfig's path is replaced)."""
    shown, skip, drop = ["python", "tests/unit/data/record.py"], False, False
    for arg in argv:
        if skip:
            shown.append("<kubeconfig>")
            skip = False
        elif drop:  # --out: where this copy went, not how it was recorded
            drop = False
        elif arg == "--out":
            drop = True
        elif arg.startswith("--out="):
            continue
        elif arg == "--kubeconfig":
            shown.append(arg)
            skip = True
        elif arg.startswith("--kubeconfig="):
            shown.append("--kubeconfig=<kubeconfig>")
        elif arg.startswith("/") and Path(arg).exists():
            shown.append(Path(arg).name)
        else:
            shown.append(arg)
    return shlex.join(shown)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="directory name under tests/unit/data/recorded/")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--context", default=None)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--selector", default="", help="label selector of the pods to record (default: all)")
    parser.add_argument("--create-namespace", action="store_true")
    parser.add_argument("--delete-namespace", action="store_true", help="delete the namespace when done")
    parser.add_argument("--apply", type=Path, action="append", default=[], help="manifest to create first")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="fill ${KEY} in the applied manifests"
    )
    parser.add_argument("--watch", type=float, default=0.0, help="record watch events for up to this many seconds")
    parser.add_argument("--until", default=None, help="stop watching once the workload has this outcome")
    parser.add_argument("--min-restarts", type=int, default=0, help="with --until: also wait for this many restarts")
    parser.add_argument("--until-reason", default=None, help="with --until: also wait for this container reason")
    parser.add_argument("--note", default="", help="a sentence for the README (what this recording shows)")
    parser.add_argument("--out", type=Path, default=HERE / "recorded")
    args = parser.parse_args(args_list)

    api = config.new_client_from_config(config_file=str(args.kubeconfig), context=args.context)
    core = client.CoreV1Api(api)
    version = client.VersionApi(api).get_code()
    nodes = _raw(core.list_node(_preload_content=False))["items"]

    if args.create_namespace:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=args.namespace)))
    try:
        recorder = Recorder(core, args.namespace, args.selector, args.watch) if args.watch else None
        if recorder:
            recorder.begin()
        values = {**TEMPLATE_DEFAULTS, **dict(item.split("=", 1) for item in args.set)}
        rendered = [string.Template(m.read_text()).substitute(values) for m in args.apply]
        for text in rendered:
            utils.create_from_yaml(api, yaml_objects=list(yaml.safe_load_all(text)), namespace=args.namespace)
        if recorder:
            wanted = Outcome.parse(args.until) if args.until else None
            while time.monotonic() < recorder.deadline:
                with recorder.lock:
                    pods = list(recorder.pods.values())
                states = [classify_pod(p) for p in pods]
                restarts = max((st.restarts for st in states), default=0)
                reasons = {c.reason for st in states for c in st.containers}
                reason_ok = args.until_reason is None or args.until_reason in reasons
                if wanted and classify_workload(pods) is wanted and restarts >= args.min_restarts and reason_ok:
                    break
                recorder.stop.wait(0.5)  # the recorder's own stop event bounds this; nothing else waits here
            recorder.end()

        out = args.out / args.name
        out.mkdir(parents=True, exist_ok=True)
        selector = {"label_selector": args.selector} if args.selector else {}
        pods_list = _raw(core.list_namespaced_pod(args.namespace, _preload_content=False, **selector))
        events_list = _raw(core.list_namespaced_event(args.namespace, _preload_content=False))
        (out / "pods.json").write_text(json.dumps(pods_list, indent=2) + "\n")
        (out / "events.json").write_text(json.dumps(events_list, indent=2) + "\n")
        for pod in pods_list["items"]:
            name = pod["metadata"]["name"]
            spec = pod.get("spec", {})
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                for previous in (False, True):
                    log = _log(core, args.namespace, name, c["name"], previous)
                    if log:
                        target = out / "logs" / name / f"{c['name']}.{'previous' if previous else 'current'}.log"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(log)
        if recorder:
            with (out / "watch.jsonl").open("w") as fh:
                for line in recorder.lines:
                    fh.write(json.dumps(line) + "\n")
        if rendered:
            (out / "manifest.yaml").write_text("---\n".join(rendered))

        node_lines = [
            f"- node {n['metadata']['name']}: kubelet {n['status']['nodeInfo']['kubeletVersion']}, "
            f"{n['status']['nodeInfo']['containerRuntimeVersion']}, "
            f"{n['status']['nodeInfo']['operatingSystem']}/{n['status']['nodeInfo']['architecture']}"
            for n in nodes
        ]
        readme = [
            f"# {args.name} (recorded)",
            "",
            args.note or "Recorded from a real kind cluster by record.py.",
            "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- cluster: Kubernetes {version.git_version} ({version.platform})",
            *node_lines,
            f"- namespace: {args.namespace}, selector: {args.selector or '(all pods)'}",
            f"- command: `{_scrub_command(args_list)}`",
            "",
            "metadata.managedFields is removed from every object (as `kubectl get -o json` does).",
        ]
        (out / "README.md").write_text("\n".join(readme) + "\n")
        print(f"recorded {len(pods_list['items'])} pod(s), {len(events_list['items'])} event(s) into {out}")
    finally:
        if args.delete_namespace:
            core.delete_namespace(args.namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
