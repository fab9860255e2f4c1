"""The layers, enforced (`make lint` runs this too): lower layers never import higher
ones. Read from the source's own import statements, so a new arrow the wrong way
fails here before it is merged."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]

# (importer package, imported package): never. Mirrors the design's whiteboard:
# the data layer knows no domain and no HTTP, the pipeline knows no domain, AI tasks
# know no HTTP.
NEVER = [
    ("shards", "deployments"),
    ("shards", "gateway"),
    ("gateway", "deployments"),
    ("ai", "gateway"),
    ("cluster", "gateway"),
]
# Known arrows the wrong way, each to be removed (not to be added to). None left: the
# outbox relay's stream and envelope are the data layer's own (shards/outbox.py), and
# consumers make their own groups.
KNOWN: set[tuple[str, str]] = set()


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_import_runs_against_the_layers() -> None:
    broken = []
    for importer, imported in NEVER:
        for path in sorted((ROOT / importer).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for module in imports_of(path):
                top = module.partition(".")[0]
                if top == imported and (relative, module) not in KNOWN:
                    broken.append(f"{relative} imports {module} ({importer} -> {imported})")
    assert not broken, "\n".join(broken)


def test_the_known_exceptions_still_exist() -> None:
    """An exception that was removed leaves this list too (so it cannot hide a new one)."""
    for relative, module in KNOWN:
        assert module in imports_of(ROOT / relative), (relative, module)
