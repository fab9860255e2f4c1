"""Generate the typed Python client of the NextFlow API (`make sdk`).

    .venv/bin/python scripts/generate_sdk.py [OUT] [--url URL]

The document is the merged OpenAPI document (`deployments.api.app.merged_openapi`,
built from the code, no stack needed) or, with `--url`, a running API's
`/openapi.json`. The generator is openapi-python-client, pinned in
`sdk/requirements.txt` and installed by scripts/setup.sh into `.venv-sdk` (its own
virtualenv: it pins an older typer than the project). OUT (default `sdk/python`)
gets the package `nextflow_client`, which needs only `httpx` and `attrs`:

    from nextflow_client import AuthenticatedClient
    from nextflow_client.api.customers import list_customers
    client = AuthenticatedClient(base_url="http://127.0.0.1:8000", token=access_token)
    page = list_customers.sync(client=client, limit=50, tagin="vip")

Errors come back parsed as `Problem` (every operation documents them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / ".venv-sdk" / "bin" / "openapi-python-client"
PACKAGE = "nextflow_client"


def document(url: str | None) -> dict[str, object]:
    if url:
        with urllib.request.urlopen(url.rstrip("/") + "/openapi.json", timeout=30) as answer:
            found: dict[str, object] = json.load(answer)
            return found
    sys.path.insert(0, str(ROOT))
    from deployments.api.app import merged_openapi

    return merged_openapi()


def generate(spec: dict[str, object], out: Path) -> Path:
    """Write `nextflow_client` for `spec` under `out`; the package's path."""
    if not GENERATOR.exists():
        raise SystemExit(f"error: {GENERATOR} not found; run scripts/setup.sh")
    out.mkdir(parents=True, exist_ok=True)
    target = out / PACKAGE
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "openapi.json"
        path.write_text(json.dumps(spec))
        # A CSV upload is bytes to the client, as any file body.
        config = Path(work) / "config.json"
        config.write_text(
            json.dumps({"content_type_overrides": {"text/csv": "application/octet-stream"}})
        )
        env_path = f"{GENERATOR.parent}:{Path(sys.executable).parent}"
        done = subprocess.run(
            [str(GENERATOR), "generate", "--path", str(path), "--meta", "none",
             "--config", str(config), "--output-path", str(Path(work) / PACKAGE)],
            capture_output=True, text=True, cwd=work, env={"PATH": env_path}, timeout=300,
        )  # fmt: skip
        if done.returncode != 0 or "Warning" in done.stdout:
            raise SystemExit(f"error: the generator said:\n{done.stdout}{done.stderr}")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(Path(work) / PACKAGE), target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "sdk" / "python"))
    parser.add_argument("--url", help="a running API (its /openapi.json)")
    args = parser.parse_args()
    target = generate(document(args.url), Path(args.out))
    print(f"generated {target}")


if __name__ == "__main__":
    main()
