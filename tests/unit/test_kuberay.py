"""The Kubernetes manifests, checked without a cluster (and without kustomize)."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from cluster import kuberay
from cluster.settings import Settings, StackSettings
from cluster.stack import worker_pool_env

KUBERAY = kuberay.KUBERAY_DIR
CRDS = KUBERAY / "crds"
OVERLAYS = sorted(p.parent for p in (KUBERAY / "overlays").glob("*/kustomization.yaml"))
MANIFESTS = sorted(p for p in KUBERAY.rglob("*.yaml") if CRDS not in p.parents)
OUR_IMAGE = "ghcr.io/nextflow-crm/nextflow:"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# -- a minimal kustomize: resources, components, patches (strategic merge of maps or
# JSON 6902 add/replace/remove), namespace. Enough to build the overlays here.


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(patch)


def _json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "replace":
            assert key in node or isinstance(node, list), f"replace of a missing {op['path']}"
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            if isinstance(node, list):
                node.append(op["value"]) if key == "-" else node.insert(key, op["value"])
            else:
                node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return doc


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    return (
        target.get("kind", doc["kind"]) == doc["kind"]
        and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def build(folder: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = folder / entry
        docs += build(path) if path.is_dir() else _docs(path)
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (folder / f).read_text() for f in gen["files"]}
        meta = {"name": gen["name"], "labels": gen.get("options", {}).get("labels", {})}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    patches = list(k.get("patches", []))
    for component in k.get("components", []):
        c = yaml.safe_load((folder / component / "kustomization.yaml").read_text())
        patches += [{**p, "path": str(Path(component) / p["path"])} for p in c["patches"]]
    for patch in patches:
        body = yaml.safe_load((folder / patch["path"]).read_text())
        hits = [i for i, d in enumerate(docs) if _matches(d, patch["target"])]
        assert hits, f"{folder}: patch {patch['path']} matches nothing"
        for i in hits:
            if isinstance(body, list):
                docs[i] = _json_patch(docs[i], body)
            else:
                docs[i] = _merge(docs[i], {k: v for k, v in body.items() if k != "metadata"})
    if "namespace" in k:
        for d in docs:
            d["metadata"]["namespace"] = k["namespace"]
    return docs


def _variants() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield "base", build(KUBERAY / "base")
    for overlay in OVERLAYS:
        yield f"overlays/{overlay.name}", build(overlay)
    prod = build(KUBERAY / "overlays" / "prod")
    gpu = yaml.safe_load((KUBERAY / "components" / "ai-gpu" / "rayservice.yaml").read_text())
    yield "prod+ai-gpu", [_json_patch(d, gpu) if d["kind"] == "RayService" else d for d in prod]


VARIANTS = dict(_variants())


def _ray_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["apiVersion"].startswith("ray.io/")]


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large
    crd = yaml.load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text(), Loader=loader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = v1["schema"]["openAPIV3Schema"]
    return schema


# -- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBERAY)))
def test_every_manifest_parses(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        assert isinstance(doc, dict | list)
        if (
            isinstance(doc, dict)
            and "kind" in doc
            and doc["kind"] not in ("Kustomization", "Component")
        ):
            assert doc.get("apiVersion") and doc["metadata"]["name"]


def test_grafana_dashboard_is_json_with_panels() -> None:
    dashboard = json.loads((KUBERAY / "base" / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)


def _ray_metric_patterns() -> list[re.Pattern[str]]:
    """The metric names Ray 2.60 defines: string literals `serve_...` in ray/serve
    (f-string fields become wildcards) and the names Ray's own dashboards use."""
    root = Path(ray.__file__).parent
    names: set[str] = set()
    for source in (root / "serve").rglob("*.py"):
        names |= set(re.findall(r"""f?["'](serve_[a-z_{}]+)["']""", source.read_text()))
    dashboards = root / "dashboard" / "modules" / "metrics" / "dashboards"
    for source in dashboards.glob("*_panels.py"):
        names |= {n.removeprefix("ray_") for n in re.findall(r"\b[a-z_]+\b", source.read_text())}
    return [
        re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[a-z]+", re.escape(n)) + "$") for n in names
    ]


def test_dashboard_metrics_exist_in_the_installed_ray() -> None:
    text = (KUBERAY / "base" / "grafana-dashboard.json").read_text()
    exprs = [t["expr"] for p in json.loads(text)["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b((?:ray_|autoscaler_)[a-z_]+)\b", e)}
    assert {
        "ray_serve_num_http_requests_total",
        "ray_serve_num_http_error_requests_total",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_serve_deployment_replica_healthy",
    } <= used
    patterns = _ray_metric_patterns()
    ours = _nextflow_metrics()
    for metric in used:
        base = re.sub(r"_(total|bucket|sum|count)$", "", metric.removeprefix("ray_"))
        if base.startswith("nextflow_"):
            assert base in ours, f"{metric} is not a metric the project defines"
            continue
        assert any(p.match(base) for p in patterns), f"{metric} is not a Ray 2.60 metric"


def _nextflow_metrics() -> set[str]:
    """The names of the project's own series (Ray exports them as `ray_<name>`)."""
    root = Path(__file__).resolve().parents[2]
    names: set[str] = set()
    for package in ("gateway", "shards", "deployments", "cluster"):
        for source in (root / package).rglob("*.py"):
            names |= set(re.findall(r"""["'](nextflow_[a-z_]+)["']""", source.read_text()))
    return names


@pytest.mark.parametrize("variant", VARIANTS)
def test_ray_objects_validate_against_the_kuberay_crds(variant: str) -> None:
    objects = _ray_objects(VARIANTS[variant])
    assert [o["kind"] for o in objects] == ["RayService"]
    for obj in objects:
        assert obj["apiVersion"] == "ray.io/v1"
        jsonschema.validate(obj, _schema(obj["kind"]))
        # The RayService's cluster is a RayCluster spec: valid as one too.
        cluster = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "nextflow"},
            "spec": obj["spec"]["rayClusterConfig"],
        }
        jsonschema.validate(cluster, _schema("RayCluster"))


def test_schema_validation_catches_a_wrong_field() -> None:
    (service,) = _ray_objects(VARIANTS["base"])
    broken = copy.deepcopy(service)
    broken["spec"]["rayClusterConfig"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema("RayService"))


def test_serve_config_v2_is_the_rendered_serve_config() -> None:
    committed = kuberay.committed_serve_config_v2()
    assert committed == kuberay.render_serve_config_v2(), "run `nextflow kuberay render`"
    local = yaml.safe_load(kuberay.SERVE_CONFIG_FILE.read_text())
    cluster = yaml.safe_load(committed)
    assert cluster["http_options"]["host"] == "0.0.0.0"
    assert cluster["http_options"]["port"] == kuberay.SERVE_PORT
    assert cluster["proxy_location"] == "EveryNode"
    assert cluster["applications"] == local["applications"]


def test_render_rewrites_only_the_block(tmp_path: Path) -> None:
    serve_config = tmp_path / "serve_config.yaml"
    local = yaml.safe_load(kuberay.SERVE_CONFIG_FILE.read_text())
    local["applications"][0]["runtime_env"] = {"working_dir": ".", "env_vars": {"A": "1"}}
    local["applications"][0]["deployments"][0]["max_ongoing_requests"] = 7
    serve_config.write_text(yaml.safe_dump(local))
    rayservice = tmp_path / "rayservice.yaml"
    before = kuberay.RAYSERVICE_FILE.read_text()
    rayservice.write_text(before)

    assert kuberay.render(serve_config, rayservice) is True
    after = rayservice.read_text()
    rendered = yaml.safe_load(kuberay.committed_serve_config_v2(rayservice))
    app = rendered["applications"][0]
    assert app["runtime_env"] == {"env_vars": {"A": "1"}}  # the code is in the image
    assert app["deployments"][0]["max_ongoing_requests"] == 7
    outside = [line for line in after.splitlines() if not line.startswith("    ")]
    assert outside == [line for line in before.splitlines() if not line.startswith("    ")]
    assert kuberay.render(serve_config, rayservice) is False
    assert kuberay.check(serve_config, rayservice) == []
    serve_config.write_text(yaml.safe_dump(yaml.safe_load(kuberay.SERVE_CONFIG_FILE.read_text())))
    assert any("serveConfigV2 differs" in p for p in kuberay.check(serve_config, rayservice))


def test_render_refuses_packages_installed_at_run_time() -> None:
    local = yaml.safe_load(kuberay.SERVE_CONFIG_FILE.read_text())
    local["applications"][0]["runtime_env"] = {"pip": ["requests"]}
    with pytest.raises(kuberay.KubeRayError, match="pyproject.toml"):
        kuberay.cluster_serve_config(local)


def _all_containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    yield from ((f"{where}/{c['name']}", c) for c in value)
                else:
                    yield from walk(value, where)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    for doc in docs:
        yield from walk(doc, f"{doc['kind']}/{doc['metadata']['name']}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_are_the_pinned_ray_and_python(variant: str) -> None:
    ray_version, python = kuberay.pinned_versions()
    assert ray_version == "2.60.0" and python == "3.11"  # what pyproject.toml says today
    assert ray.__version__ == ray_version
    (service,) = _ray_objects(VARIANTS[variant])
    assert kuberay.image_problems(service) == []
    ours = [(w, c["image"]) for w, c in _all_containers(VARIANTS[variant]) if "nextflow" in w]
    ours = [(w, image) for w, image in ours if image.startswith(OUR_IMAGE)]
    assert len(ours) >= 4  # head, two worker groups, the migrate Job
    for where, image in ours:
        assert f"-ray{ray_version}-py{python}" in image, where
    assert kuberay.dockerfile_problems(kuberay.DOCKERFILE) == []


def test_image_pin_check_catches_a_mismatch(tmp_path: Path) -> None:
    (service,) = _ray_objects(VARIANTS["base"])
    wrong = copy.deepcopy(service)
    head = wrong["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["image"] = "rayproject/ray:2.59.0-py311"
    assert kuberay.image_problems(wrong)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM rayproject/ray:2.60.0-py310\n")
    assert kuberay.dockerfile_problems(dockerfile)
    # The right base, but a package of the project not copied into the image.
    ours = kuberay.DOCKERFILE.read_text()
    dockerfile.write_text(ours.replace("COPY --chown=ray:users ai ./ai\n", ""))
    assert kuberay.dockerfile_problems(dockerfile) == [
        "Dockerfile: the image lacks the package(s) ai"
    ]


_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[-_]?key)$", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|AUTH)$")
_NOT_SECRET_ENV = {"RAY_AUTH_MODE"}


def _walk_secrets(node: Any, where: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if isinstance(value, str | int | float) and _SECRET_KEY.search(str(key)) and value:
                yield f"{here}: a literal value"
            if key in ("env",) and isinstance(value, list):
                for var in value:
                    name = str(var.get("name", ""))
                    if _SECRET_ENV.search(name) and name not in _NOT_SECRET_ENV:
                        if "secretKeyRef" not in (var.get("valueFrom") or {}):
                            yield f"{here}.{name}: not from a secretKeyRef"
            yield from _walk_secrets(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk_secrets(item, f"{where}[{i}]")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBERAY)))
def test_no_plaintext_secret(path: Path) -> None:
    text = path.read_text()
    assert "kind: Secret" not in text, "Secrets are created out of band (docs/kubernetes.md)"
    assert not re.search(r"\w+://[^/\s:@]*:[^@\s]+@", text), "a URL with a password"
    for value in re.findall(r"--requirepass[\s\-\"']*([^\s\"']+)", text):
        assert value.startswith("$("), "--requirepass takes a literal password"
    problems = [p for doc in _docs(path) for p in _walk_secrets(doc, path.name)]
    assert problems == []


def test_the_secret_scan_catches_literals() -> None:
    doc = {"env": [{"name": "NEXTFLOW_PG_PASSWORD", "value": "hunter2"}], "token": "abc"}
    assert len(list(_walk_secrets(doc, "x"))) == 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_groups_hold_every_deployment_at_max_replicas(variant: str) -> None:
    (service,) = _ray_objects(VARIANTS[variant])
    serve_config = yaml.safe_load(kuberay.SERVE_CONFIG_FILE.read_text())
    assert kuberay.capacity_problems(service, serve_config) == []
    groups = {g.name: g for g in kuberay.worker_groups(service)}
    assert groups["ai"].resources["ai"] > 0 and not groups["services"].resources


def test_capacity_check_catches_too_small_a_group() -> None:
    (service,) = _ray_objects(VARIANTS["base"])
    serve_config = yaml.safe_load(kuberay.SERVE_CONFIG_FILE.read_text())
    first = serve_config["applications"][0]["deployments"][0]
    first["autoscaling_config"]["max_replicas"] = 1000
    assert any("at maxReplicas" in p for p in kuberay.capacity_problems(service, serve_config))
    first["ray_actor_options"] = {"num_cpus": 64}
    assert any("fits in no pod" in p for p in kuberay.capacity_problems(service, serve_config))
    first["ray_actor_options"] = {"num_cpus": 0.1, "resources": {"gpu_box": 1}}
    assert any("gpu_box" in p for p in kuberay.capacity_problems(service, serve_config))


def test_capacity_counts_custom_resources() -> None:
    (service,) = _ray_objects(VARIANTS["base"])
    ai = kuberay.worker_groups(service)[1]
    serve_config = {
        "applications": [
            {
                "name": "a",
                "deployments": [
                    {
                        "name": "Scorer",
                        "num_replicas": ai.max_replicas,
                        "ray_actor_options": {"num_cpus": 1, "resources": {"ai": 1}},
                    }
                ],
            }
        ]
    }
    assert kuberay.capacity_problems(service, serve_config) == []
    serve_config["applications"][0]["deployments"][0]["num_replicas"] = 1000
    assert kuberay.capacity_problems(service, serve_config)
    assert Decimal(ai.cpus) > 0


def _kustomize_files(folder: Path) -> Iterator[Path]:
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for entry in [*k.get("resources", []), *k.get("components", [])]:
        yield folder / entry
    for patch in k.get("patches", []):
        yield folder / patch["path"]
    for gen in k.get("configMapGenerator", []):
        yield from (folder / f for f in gen.get("files", []))


@pytest.mark.parametrize(
    "folder",
    sorted(p.parent for p in KUBERAY.rglob("kustomization.yaml")),
    ids=lambda p: str(p.relative_to(KUBERAY)),
)
def test_kustomizations_name_files_that_exist(folder: Path) -> None:
    for path in _kustomize_files(folder):
        assert path.exists(), f"{folder.name}/kustomization.yaml names a missing {path}"
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), path


def test_overlays_are_dev_and_prod_and_prod_is_larger() -> None:
    assert [p.name for p in OVERLAYS] == ["dev", "prod"]

    def size(variant: str) -> tuple[Decimal, int]:
        (service,) = _ray_objects(VARIANTS[variant])
        groups = kuberay.worker_groups(service)
        spec = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        return sum((g.cpus * g.max_replicas for g in groups), Decimal(0)), spec["minReplicas"]

    assert size("overlays/prod")[0] > size("overlays/dev")[0]
    assert size("overlays/prod")[1] > size("overlays/dev")[1]
    assert {d["metadata"]["namespace"] for d in VARIANTS["overlays/prod"]} == {"nextflow"}


def test_settings_reach_servers_behind_services() -> None:
    env = {
        "server_host_template": "nextflow-{server}-rw",
        "replica_host_template": "nextflow-{server}-ro",
        "catalog_port": 5432,
        "shard_base_port": 5432,
        "shard_servers": 2,
        "redis_host": "nextflow-redis",
        "redis_port": 6379,
    }
    s = StackSettings(**env)  # type: ignore[arg-type]
    assert s.catalog_address().host == "nextflow-catalog-rw"
    assert [(a.name, a.host, a.port) for a in s.shard_server_addresses()] == [
        ("shard1", "nextflow-shard1-rw", 5432),
        ("shard2", "nextflow-shard2-rw", 5432),
    ]
    replica = s.replica_address(s.shard_server_addresses()[1])
    assert (replica.name, replica.host, replica.port) == (
        "shard2-replica",
        "nextflow-shard2-ro",
        5432,
    )
    assert s.redis_url == "redis://nextflow-redis:6379/0"
    secrets = {"pg_password": "p", "jwt_secret": "j" * 32, "secrets_key": "k" * 32}
    app = Settings(**env, **secrets, redis_password="a/b@c")  # type: ignore[arg-type]
    assert app.redis_url == "redis://:a%2Fb%40c@nextflow-redis:6379/0"
    local = StackSettings()
    assert local.catalog_address().host == local.host
    replica_port = local.catalog_port + local.replica_port_offset
    assert local.replica_address(local.catalog_address()).port == replica_port


def test_the_settings_config_map_names_real_settings() -> None:
    (config_map,) = _docs(KUBERAY / "base" / "settings.yaml")
    fields = {f"NEXTFLOW_{name.upper()}" for name in Settings.model_fields}
    assert set(config_map["data"]) <= fields
    s = StackSettings(
        **{k.removeprefix("NEXTFLOW_").lower(): v for k, v in config_map["data"].items()}
    )
    servers = [a.host for a in s.shard_server_addresses()]
    clusters = [d["metadata"]["name"] for d in _docs(KUBERAY / "base" / "postgres.yaml")]
    assert sorted(
        f"{h.removesuffix('-rw')}" for h in [s.catalog_address().host, *servers]
    ) == sorted(clusters)
    assert all(d["spec"]["instances"] == 2 for d in _docs(KUBERAY / "base" / "postgres.yaml"))


def test_every_ray_container_keeps_idle_task_workers_as_the_local_stack_does() -> None:
    """Ray stops a task worker 1 s after its last task unless told otherwise; every
    Ray node on Kubernetes is told what `nextflow up` tells its head."""
    (service,) = _docs(KUBERAY / "base" / "rayservice.yaml")
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    wanted = worker_pool_env(StackSettings())
    assert wanted == {"RAY_idle_worker_killing_time_threshold_ms": "300000"}
    for pod in pods:
        (container,) = pod["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in wanted} == wanted, container["name"]
