"""Hub-ready SAE folders, through huggingface_hub's PyTorchModelHubMixin (save_pretrained / from_pretrained /
push_to_hub are the mixin's; this module supplies what they write and read).

A folder holds
    model.safetensors   the checkpoint (checkpoint.py: weights + JSON record in the header, content hash)
    config.json         the same record: {"schema_version", "variant", "config", "library_version", "content_sha256"}
    method_card.json    the SAE's method card, when given
    README.md           the method card as the model card, with hub front matter (else the mixin's default card)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write, check_record, load_sae, sae_record, save_sae, variant_class

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD_JSON = "method_card.json"
FRONT_MATTER = "---\nlibrary_name: sae_tutorial\ntags:\n- sparse-autoencoder\n- interpretability\n- vision\n---\n\n"


def write_folder(sae, directory: Path) -> None:
    """Weights and config.json (the mixin's `_save_pretrained`)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_sae(sae, directory / WEIGHTS)
    record = sae_record(sae)
    atomic_write(directory / CONFIG, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))


def write_card(directory: Path, card: tuple[str | Path, str | Path]) -> None:
    """Copy a method card (its JSON and Markdown, as written by `st.method_card`) into the folder as the model card."""
    card_json, card_md = (Path(p) for p in card)
    for p in (card_json, card_md):
        if not p.is_file():
            raise FileNotFoundError(f"method card file {p} does not exist")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(card_json, directory / CARD_JSON)
    text = FRONT_MATTER + card_md.read_text()
    atomic_write(directory / "README.md", lambda tmp: tmp.write_text(text))


def _resolve(model_id: str, filename: str, **hub_kwargs: Any) -> Path:
    local = Path(model_id)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{local} has no {filename}: not an sae_tutorial SAE folder")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=model_id, filename=filename, **hub_kwargs))


def read_folder(cls, model_id: str, map_location: Any = "cpu", **hub_kwargs: Any):
    """Load the SAE in a local folder or hub repo (the mixin's `_from_pretrained`): config.json is checked first
    (schema version, variant), then the checkpoint with its content hash."""
    config_path = _resolve(model_id, CONFIG, **hub_kwargs)
    record = check_record(json.loads(config_path.read_text()), config_path)
    variant_class(record, config_path, expected=cls)
    return load_sae(_resolve(model_id, WEIGHTS, **hub_kwargs), device=map_location, expected=cls)
