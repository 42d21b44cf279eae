"""Re-validation speed-ups must never change what `loom validate` reports.

Two shortcuts sit in the validation path: jsonschema-rs answers "valid?"
before the pure-Python validator explains problems, and template check
results are cached under the template's content.  These tests pin that a
problem is reported the same with and without them.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest

from engine import checkcache
from engine.definitions import validate_package
from engine.package import read_package
from engine.schema_check import fast_validator_for, validator_for
from engine.yamlpos import load_yaml
from tests.conftest import FIXTURES, ROOT
from ui.wiring import load_engines

load_engines()
CRM = ROOT / "apps" / "automotive_crm"


def _crm_documents() -> list[tuple[str, str, object]]:
    pkg = read_package(CRM)
    kinds = {"forms": "form", "flows": "flow", "rules": "rules", "reports": "reports"}
    out = [("app.yaml", "app", load_yaml(pkg.text("app.yaml")).data)]
    for folder, kind in kinds.items():
        out += [(p, kind, load_yaml(pkg.text(p)).data) for p in pkg.yaml_files(folder)]
    return out


def _mutations(data):
    """Deterministic single-point breakages of every mapping and list in ``data``."""
    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                yield path + (key,)
                yield from walk(value, path + (key,))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield path + (i,)
                yield from walk(value, path + (i,))

    paths = list(walk(data, ()))
    stride = max(1, len(paths) // 15)     # ~15 places per file, spread over every depth
    for path in paths[::stride]:
        for replacement in ({"unexpected": 1}, 12345678901234567890123, [], "", None, True):
            broken = copy.deepcopy(data)
            parent = broken
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = replacement
            yield path, broken
        if isinstance(data, dict):
            extra = copy.deepcopy(data)
            extra["no_such_key"] = 1
            yield ("no_such_key",), extra


@pytest.mark.parametrize("path,kind,data", _crm_documents(), ids=lambda v: v if isinstance(v, str) and "/" in v or v == "app.yaml" else "")
def test_fast_schema_check_never_passes_what_the_full_validator_rejects(path, kind, data):
    fast = fast_validator_for(kind)
    assert fast is not None, "jsonschema-rs is a dependency; the fast path must be active"
    assert fast.is_valid(data) and not list(validator_for(kind).iter_errors(data))
    checked = 0
    for where, broken in _mutations(data):
        try:
            fast_ok = fast.is_valid(broken)
        except Exception:  # noqa: BLE001 -- schema_problems then asks the full validator
            continue
        if fast_ok:
            errors = [e.message for e in validator_for(kind).iter_errors(broken)]
            assert not errors, f"{path} at {where}: fast check passed, full validator says {errors[:2]}"
        checked += 1
    assert checked > 0


def _package(tmp_path, edits: dict[str, str]):
    root = tmp_path / "pkg"
    if not root.exists():
        shutil.copytree(FIXTURES / "mini_app", root)
    for rel, content in edits.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content, encoding="utf-8")
    return read_package(root)


def test_template_results_are_reused_and_follow_edits(tmp_path, monkeypatch):
    parsed = []
    import rules.templates as templates
    real = templates._check_one
    monkeypatch.setattr(templates, "_check_one", lambda env, path, blob: parsed.append(path) or real(env, path, blob))

    bad = "Hello {{ record.name }\n"
    first = [str(p) for p in validate_package(_package(tmp_path, {"templates/hello.zh.j2": bad}))]
    again = [str(p) for p in validate_package(_package(tmp_path, {}))]
    assert first == again and any(p.startswith("templates/hello.zh.j2:1:1: template syntax error") for p in first)
    assert parsed.count("templates/hello.zh.j2") == 1, "an unchanged template is not parsed twice"

    fixed = [str(p) for p in validate_package(_package(tmp_path, {"templates/hello.zh.j2": "Hello {{ record.name }}\n"}))]
    assert not any("hello.zh.j2" in p for p in fixed)
    assert parsed.count("templates/hello.zh.j2") == 2, "an edited template is checked again"


def test_disk_cache_survives_processes_and_ignores_corruption(tmp_path):
    cache_dir = tmp_path / "cache"
    pkg = tmp_path / "pkg"
    _package(tmp_path, {"templates/hello.zh.j2": "{{ record.__class__ }}\n"})
    env = {"LOOM_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "ui.cli", "validate", str(pkg)]

    def run():
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)

    first = run()
    assert first.returncode == 1 and "templates/hello.zh.j2:1:1: templates may not use '__class__'" in first.stderr
    stored = json.loads((cache_dir / "templates.json").read_text("utf-8"))
    assert len(stored) == 1
    assert run().stderr == first.stderr, "a cached result reports exactly what a fresh check does"

    (cache_dir / "templates.json").write_text("{not json", encoding="utf-8")
    assert run().stderr == first.stderr, "a corrupt cache file is an empty cache, not an error"

    no_cache = subprocess.run(cmd + ["--no-cache"], env={**env, "LOOM_CACHE_DIR": str(tmp_path / "other")},
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert no_cache.stderr == first.stderr and not (tmp_path / "other").exists()


def test_cache_keeps_a_bounded_number_of_entries(monkeypatch):
    cache = checkcache.CheckCache()
    monkeypatch.setattr(checkcache, "MAX_ENTRIES", 3)
    for i in range(5):
        cache.put("t", f"k{i}", i)
    assert [cache.get("t", f"k{i}") for i in range(5)] == [None, None, 2, 3, 4]
