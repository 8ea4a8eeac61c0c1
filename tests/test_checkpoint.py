"""Checkpoints: every variant round-trips; foreign, newer, corrupt or truncated files give clear errors."""
import json
import sys

import pytest
import torch
from safetensors.torch import save_file

import sae_tutorial as st
from sae_tutorial.checkpoint import META_KEY, atomic_write
from sae_tutorial.sae import VARIANTS

D, M, K = 12, 40, 3


def trained(variant: str):
    cls = VARIANTS[variant]
    extra = {"threshold_start": 0} if variant == "BatchTopKSAE" else {}   # θ moves within these 5 steps
    sae = cls(D, M, K, seed=1, **extra) if cls.takes_k else cls(D, M, seed=1)
    st.train(sae, torch.randn(512, D), st.TrainConfig(batch_size=64, steps=5, progress=False))
    return sae


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip(tmp_path, variant):
    sae = trained(variant)
    path = sae.save(tmp_path / "sae.safetensors")
    loaded = st.load(path)
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for (name, a), b in zip(sae.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    loaded.eval()
    sae.eval()
    x = torch.randn(7, D)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert type(sae).load(path).config() == sae.config()
    if variant == "BatchTopKSAE":
        assert float(loaded.threshold) > 0 and torch.equal(loaded.threshold, sae.threshold)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_wrong_variant(tmp_path):
    path = trained("TopKSAE").save(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="holds a TopKSAE, not a ReLUSAE"):
        st.ReLUSAE.load(path)


def _rewrite_record(path, **changes):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        record = json.loads(f.metadata()[META_KEY])
    record.update(changes)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(record)})


def test_newer_schema_and_unknown_variant(tmp_path):
    path = trained("TopKSAE").save(tmp_path / "a.safetensors")
    _rewrite_record(path, schema_version=99)
    with pytest.raises(ValueError, match="schema version 99"):
        st.load(path)
    path = trained("TopKSAE").save(tmp_path / "b.safetensors")
    _rewrite_record(path, variant="JumpReLUSAE")
    with pytest.raises(ValueError, match="unknown variant 'JumpReLUSAE'"):
        st.load(path)


def test_corrupt_truncated_and_foreign_files(tmp_path):
    path = trained("TopKSAE").save(tmp_path / "a.safetensors")
    raw = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        st.load(tmp_path / "trunc.safetensors")
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF                                   # a bit flip inside the tensor data
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="hash mismatch"):
        st.load(tmp_path / "flip.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an sae_tutorial checkpoint"):
        st.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        st.load(tmp_path / "missing.safetensors")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hub_folder_round_trip(tmp_path, variant):
    sae = trained(variant)
    sae.save_pretrained(tmp_path / "repo")
    assert {p.name for p in (tmp_path / "repo").iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    loaded = st.SparseAutoencoder.from_pretrained(str(tmp_path / "repo"))
    assert type(loaded) is type(sae)
    for (name, a), b in zip(sae.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert type(sae).from_pretrained(str(tmp_path / "repo")).config() == sae.config()


def test_hub_folder_errors_and_card(tmp_path):
    sae = trained("TopKSAE")
    (tmp_path / "card.json").write_text('{"name": "demo"}')
    (tmp_path / "card.md").write_text("# Method card: demo\n")
    sae.save_pretrained(tmp_path / "repo", card=(tmp_path / "card.json", tmp_path / "card.md"))
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: sae_tutorial") and "# Method card: demo" in readme
    assert json.loads((tmp_path / "repo" / "method_card.json").read_text()) == {"name": "demo"}
    with pytest.raises(ValueError, match="holds a TopKSAE, not a BatchTopKSAE"):
        st.BatchTopKSAE.from_pretrained(str(tmp_path / "repo"))
    cfg = json.loads((tmp_path / "repo" / "config.json").read_text())
    (tmp_path / "repo" / "config.json").write_text(json.dumps({**cfg, "schema_version": 2}))
    with pytest.raises(ValueError, match="schema version 2"):
        st.TopKSAE.from_pretrained(str(tmp_path / "repo"))
    with pytest.raises(FileNotFoundError, match="method card"):
        sae.save_pretrained(tmp_path / "r2", card=(tmp_path / "nope.json", tmp_path / "card.md"))


# ---------------------------------------------------------------- import structure
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

PACKAGE = Path(st.__file__).parent
PERSISTENCE = {"sae_tutorial.checkpoint", "sae_tutorial.hub", "sae_tutorial.interop"}
THIN_METHODS = {"save", "load", "save_as", "save_pretrained", "_save_pretrained", "_from_pretrained"}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("sae_tutorial", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(module: str, path: Path, names: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported sae_tutorial module, enclosing function or None) for every import in the file."""
    is_pkg = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = ".".join(base[: len(base) - child.level + 1] + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    found.append((target if target in names else base, f))
            elif isinstance(child, ast.Import):
                found.extend((a.name, f) for a in child.names)
            visit(child, f)

    visit(ast.parse(path.read_text()), None)
    return [(t, f) for t, f in found if t in names and t != module]


def test_no_import_cycle_and_the_model_family_never_imports_persistence():
    """Module-level imports form no cycle; sae/ reaches checkpoint/hub/interop only from its thin save/load methods
    (late imports), never at import time. Persistence imports the model family, not the reverse."""
    names = _module_names()
    graph = {m: {t for t, f in _imports(m, p, names) if f is None} for m, p in names.items()}
    state: dict[str, int] = {}

    def dfs(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(t):] + [t])}")
            if t not in state:
                dfs(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert "sae_tutorial.sae" in graph["sae_tutorial.checkpoint"]          # persistence → model family
    for m, p in names.items():
        if m.startswith("sae_tutorial.sae"):
            for target, func in _imports(m, p, names):
                if any(target == q or target.startswith(q + ".") for q in PERSISTENCE):
                    assert func in THIN_METHODS, f"{m} imports {target} in {func or 'module scope'}"


def test_the_cycle_check_can_fail(tmp_path, monkeypatch):
    """The checker finds a planted cycle (a → b → a)."""
    pkg = tmp_path / "sae_tutorial"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import a\nx = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    with pytest.raises(AssertionError, match="import cycle: sae_tutorial.a -> sae_tutorial.b -> sae_tutorial.a"):
        test_no_import_cycle_and_the_model_family_never_imports_persistence()
