"""The Kubernetes deployment's generated part and its checks, without a cluster.

`serve_config.yaml` is the one deploy artefact. The RayService in
`kuberay/base/rayservice.yaml` carries a copy of it as `serveConfigV2`, rendered for
the cluster by `nextflow kuberay render` and never edited by hand;
`nextflow kuberay check` (and the unit tests) fail when the two differ, when the Ray
image is not the Ray and Python of `pyproject.toml`, or when a worker group cannot
hold the replicas `serve_config.yaml` may scale to.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KUBERAY_DIR",
    "RAYSERVICE_FILE",
    "SERVE_PORT",
    "KubeRayError",
    "capacity_problems",
    "check",
    "cluster_serve_config",
    "committed_serve_config_v2",
    "image_problems",
    "load_yaml",
    "render",
    "render_serve_config_v2",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
KUBERAY_DIR = REPO_ROOT / "kuberay"
RAYSERVICE_FILE = KUBERAY_DIR / "base" / "rayservice.yaml"
SERVE_CONFIG_FILE = REPO_ROOT / "serve_config.yaml"
PYPROJECT_FILE = REPO_ROOT / "pyproject.toml"
DOCKERFILE = KUBERAY_DIR / "Dockerfile"

# KubeRay's Serve Service and the workers' readiness probe use the container port 8000.
SERVE_PORT = 8000
# Serve's gRPC server (grpc_options; kuberay/base/grpc-service.yaml sends traffic to it).
GRPC_PORT = 9000
# The code and its dependencies are in the image; these would ship them at run time.
_CODE_KEYS = ("working_dir", "py_modules")
_PACKAGE_KEYS = ("pip", "uv", "conda")
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)serveConfigV2:[ \t]*\|[-+]?[ \t]*$")


class KubeRayError(ValueError):
    """A manifest or the Serve config cannot be rendered or checked."""


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KubeRayError(f"{path}: not valid YAML: {exc}") from exc


def cluster_serve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The local Serve config as the cluster runs it.

    - HTTP on every pod address (`0.0.0.0`, port 8000): KubeRay's Serve Service sends
      traffic to the pods, the local stack binds 127.0.0.1.
    - gRPC (when the config has servicers) on port 9000 of every pod, behind the
      `nextflow-grpc` Service (kuberay/base/grpc-service.yaml).
    - A proxy on every node (`EveryNode`), so any worker pod can take traffic.
    - No code shipped at run time: the image holds the project, so `working_dir` and
      `py_modules` are dropped, and packages to install (`pip`, ...) are refused.
    Settings and secrets reach replicas as container environment variables (a
    ConfigMap and `secretKeyRef`s), never through the Serve config.
    """
    if not isinstance(config, dict) or not config.get("applications"):
        raise KubeRayError("not a Serve config (no `applications`)")
    rendered = copy.deepcopy(config)
    rendered["proxy_location"] = "EveryNode"
    http_options = dict(rendered.get("http_options") or {})
    http_options.update(host="0.0.0.0", port=SERVE_PORT)
    rendered["http_options"] = http_options
    grpc_options = dict(rendered.get("grpc_options") or {})
    if grpc_options.get("grpc_servicer_functions"):
        grpc_options["port"] = GRPC_PORT
        rendered["grpc_options"] = grpc_options
    for app in rendered["applications"]:
        runtime_env = app.get("runtime_env")
        if not runtime_env:
            continue
        extra = [key for key in _PACKAGE_KEYS if key in runtime_env]
        if extra:
            raise KubeRayError(
                f"application {app.get('name')!r}: runtime_env {', '.join(extra)} would install "
                "packages at run time; add them to pyproject.toml (the image installs them)"
            )
        kept = {k: v for k, v in runtime_env.items() if k not in _CODE_KEYS}
        if kept:
            app["runtime_env"] = kept
        else:
            del app["runtime_env"]
    return rendered


def render_serve_config_v2(serve_config: Path = SERVE_CONFIG_FILE) -> str:
    """The `serveConfigV2` text for `serve_config`."""
    config = load_yaml(serve_config)
    try:
        rendered = cluster_serve_config(config)
    except KubeRayError as exc:
        raise KubeRayError(f"{serve_config}: {exc}") from None
    return yaml.safe_dump(rendered, sort_keys=False, width=100)


def committed_serve_config_v2(rayservice: Path = RAYSERVICE_FILE) -> str:
    doc = load_yaml(rayservice)
    try:
        text = doc["spec"]["serveConfigV2"]
    except (KeyError, TypeError):
        raise KubeRayError(f"{rayservice}: no spec.serveConfigV2") from None
    if not isinstance(text, str):
        raise KubeRayError(f"{rayservice}: spec.serveConfigV2 is not a string")
    return text


def _replace_block(manifest: str, text: str) -> str:
    """`manifest` with its `serveConfigV2: |` block replaced by `text`; the rest of
    the file (comments, order) is kept byte for byte."""
    lines = manifest.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _BLOCK.match(line)]
    if len(starts) != 1:
        raise KubeRayError("expected exactly one `serveConfigV2: |` block")
    start = starts[0]
    match = _BLOCK.match(lines[start])
    assert match is not None
    outer = len(match["indent"])
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and len(line) - len(line.lstrip(" ")) <= outer:
            break
        end += 1
    # Trailing blank lines belong to what follows the block.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    indent = " " * (outer + 2)
    body = [f"{indent}{line}\n" if line else "\n" for line in text.rstrip("\n").split("\n")]
    head = f"{match['indent']}serveConfigV2: |\n"
    return "".join([*lines[:start], head, *body, *lines[end:]])


def render(serve_config: Path = SERVE_CONFIG_FILE, rayservice: Path = RAYSERVICE_FILE) -> bool:
    """Write the rendered `serveConfigV2` into `rayservice`; True when it changed."""
    text = render_serve_config_v2(serve_config)
    before = rayservice.read_text()
    after = _replace_block(before, text)
    if yaml.safe_load(after)["spec"]["serveConfigV2"] != text:
        raise KubeRayError(f"{rayservice}: the rendered block does not read back unchanged")
    if after == before:
        return False
    rayservice.write_text(after)
    return True


# -- capacity -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerGroup:
    name: str
    max_replicas: int
    cpus: Decimal  # per pod, as Ray sees it
    resources: dict[str, Decimal]  # custom resources per pod


@dataclass(frozen=True)
class DeploymentNeed:
    application: str
    name: str
    max_replicas: int
    num_cpus: Decimal
    resources: dict[str, Decimal]

    @property
    def label(self) -> str:
        return f"{self.application}/{self.name}"


def _quantity(value: object) -> Decimal:
    """A Kubernetes CPU quantity (`2`, `"500m"`, `"1.5"`) in cores."""
    text = str(value).strip().strip('"')
    if text.endswith("m"):
        return Decimal(text[:-1]) / 1000
    return Decimal(text)


def _start_resources(params: dict[str, Any]) -> dict[str, Decimal]:
    raw = params.get("resources")
    if not raw:
        return {}
    # KubeRay's format is a JSON object quoted for the shell: '"{\"ai\": 1}"'.
    text = str(raw).strip().strip("'").strip('"').replace('\\"', '"')
    parsed = yaml.safe_load(text)
    if not isinstance(parsed, dict):
        raise KubeRayError(f"rayStartParams.resources not understood: {raw!r}")
    return {str(k): Decimal(str(v)) for k, v in parsed.items()}


def worker_groups(rayservice: dict[str, Any]) -> list[WorkerGroup]:
    groups = []
    cluster = rayservice["spec"]["rayClusterConfig"]
    for spec in cluster.get("workerGroupSpecs") or []:
        params = spec.get("rayStartParams") or {}
        if "num-cpus" in params:
            cpus = _quantity(params["num-cpus"])
        else:
            container = spec["template"]["spec"]["containers"][0]
            limits = (container.get("resources") or {}).get("limits") or {}
            requests = (container.get("resources") or {}).get("requests") or {}
            cpus = _quantity(limits.get("cpu", requests.get("cpu", 0)))
        groups.append(
            WorkerGroup(spec["groupName"], int(spec["maxReplicas"]), cpus, _start_resources(params))
        )
    return groups


def deployment_needs(serve_config: dict[str, Any]) -> list[DeploymentNeed]:
    needs = []
    for app in serve_config.get("applications") or []:
        for dep in app.get("deployments") or []:
            autoscaling = dep.get("autoscaling_config") or {}
            replicas = autoscaling.get("max_replicas", dep.get("num_replicas", 1))
            options = dep.get("ray_actor_options") or {}
            resources = {k: Decimal(str(v)) for k, v in (options.get("resources") or {}).items()}
            needs.append(
                DeploymentNeed(
                    str(app.get("name")),
                    str(dep["name"]),
                    int(replicas),
                    # Ray's default for an actor's scheduling is 1 CPU when unset.
                    Decimal(str(options.get("num_cpus", 1))),
                    resources,
                )
            )
    return needs


def capacity_problems(rayservice: dict[str, Any], serve_config: dict[str, Any]) -> list[str]:
    """What `serve_config` may ask for at `max_replicas` that the worker groups cannot
    hold at their `maxReplicas` (the head runs no replicas: `num-cpus: "0"`).

    Deployments that ask for a custom resource (e.g. `ai`) must fit in the groups that
    declare it; the others in the groups that declare none (the services group), so
    Serve never fills the AI workers. A replica must also fit in one pod.
    """
    groups = worker_groups(rayservice)
    problems = []
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    if str((head.get("rayStartParams") or {}).get("num-cpus")) != "0":
        problems.append('the head group must set rayStartParams num-cpus: "0"')
    pools: dict[frozenset[str], list[DeploymentNeed]] = {}
    for need in deployment_needs(serve_config):
        pools.setdefault(frozenset(need.resources), []).append(need)
    for wanted, needs in pools.items():
        hosts = [g for g in groups if set(g.resources) == set(wanted)] or [
            g for g in groups if wanted <= set(g.resources)
        ]
        names = ", ".join(n.label for n in needs)
        if not hosts:
            problems.append(f"no worker group declares {sorted(wanted) or 'no custom resource'}")
            continue
        for need in needs:
            if not any(
                g.cpus >= need.num_cpus
                and all(g.resources.get(r, Decimal(0)) >= q for r, q in need.resources.items())
                for g in hosts
            ):
                problems.append(f"{need.label}: one replica fits in no pod of its groups")
        cpu_needed = sum((n.max_replicas * n.num_cpus for n in needs), Decimal(0))
        cpu_there = sum((g.max_replicas * g.cpus for g in hosts), Decimal(0))
        if cpu_needed > cpu_there:
            problems.append(
                f"{names}: {cpu_needed} CPUs at max_replicas, but "
                f"{', '.join(g.name for g in hosts)} hold {cpu_there} at maxReplicas"
            )
        for resource in wanted:
            need_r = sum((n.max_replicas * n.resources[resource] for n in needs), Decimal(0))
            have_r = sum((g.max_replicas * g.resources[resource] for g in hosts), Decimal(0))
            if need_r > have_r:
                problems.append(f"{names}: {need_r} {resource} wanted, {have_r} available")
    return problems


# -- image pin ----------------------------------------------------------------------


def pinned_versions(pyproject: Path = PYPROJECT_FILE) -> tuple[str, str]:
    """(Ray version, Python major.minor) that `pyproject.toml` pins."""
    project = tomllib.loads(pyproject.read_text())["project"]
    ray = next(
        (m[1] for d in project["dependencies"] if (m := re.match(r"^ray\[[^]]*\]==(\S+)$", d))),
        None,
    )
    if ray is None:
        raise KubeRayError(f"{pyproject}: no `ray[...]==` pin")
    python = re.match(r"^>=(\d+\.\d+),<", project["requires-python"])
    if python is None:
        raise KubeRayError(f"{pyproject}: requires-python is not `>=X.Y,<...`")
    return ray, python[1]


def _ray_containers(rayservice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster.get("workerGroupSpecs") or []]
    return [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]


def image_problems(rayservice: dict[str, Any], pyproject: Path = PYPROJECT_FILE) -> list[str]:
    """Every Ray container runs the project image tagged `...-ray<ver>-py<X.Y>`, and
    `rayVersion` names the same Ray (KubeRay uses it to pick features)."""
    ray, python = pinned_versions(pyproject)
    problems = []
    version = rayservice["spec"]["rayClusterConfig"].get("rayVersion")
    if version != ray:
        problems.append(f"rayVersion is {version!r}, pyproject.toml pins ray {ray}")
    for group, container in _ray_containers(rayservice):
        tag = str(container.get("image", "")).rpartition(":")[2]
        if not re.search(rf"(^|-)ray{re.escape(ray)}-py{re.escape(python)}(-|$)", tag):
            problems.append(
                f"{group}/{container.get('name')}: image tag {tag!r} is not "
                f"ray{ray}-py{python} (pyproject.toml)"
            )
    return problems


def dockerfile_problems(dockerfile: Path, pyproject: Path = PYPROJECT_FILE) -> list[str]:
    """The image is built FROM rayproject/ray at the pinned Ray and Python (a
    `-gpu`/`-cuXXX` variant of that tag is the same Ray and Python)."""
    ray, python = pinned_versions(pyproject)
    base = f"rayproject/ray:{ray}-py{python.replace('.', '')}"
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    froms = [
        re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), image)
        for image in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    ]
    if not froms or not all(f == base or f.startswith(f"{base}-") for f in froms):
        return [f"{dockerfile.name}: FROM {', '.join(froms) or 'nothing'} is not {base}"]
    # Every top-level package the project installs is copied into the image (a new
    # one forgotten here would import on a laptop and fail in every pod).
    with pyproject.open("rb") as f:
        found = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.rstrip("*") for p in found)
    copied = set(re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s", text, flags=re.MULTILINE))
    missing = [p for p in packages if p not in copied]
    if missing:
        return [f"{dockerfile.name}: the image lacks the package(s) {', '.join(missing)}"]
    return []


def check(
    serve_config: Path = SERVE_CONFIG_FILE,
    rayservice: Path = RAYSERVICE_FILE,
    pyproject: Path = PYPROJECT_FILE,
    dockerfile: Path = DOCKERFILE,
) -> list[str]:
    """Every check that needs no cluster and no dev dependency; empty when all pass."""
    problems = []
    if committed_serve_config_v2(rayservice) != render_serve_config_v2(serve_config):
        problems.append(
            f"{rayservice.name}: serveConfigV2 differs from {serve_config.name}; "
            "run `nextflow kuberay render`"
        )
    doc = load_yaml(rayservice)
    problems += capacity_problems(doc, load_yaml(serve_config))
    problems += image_problems(doc, pyproject)
    problems += dockerfile_problems(dockerfile, pyproject)
    return problems
