"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint `TAG` in a run folder is three files:
    TAG.safetensors        model weights
    TAG.optim.safetensors  optimiser state and RNG state (for exact resume)
    TAG.json               model name + config, data source + vocabulary, training state,
                           and the SHA-256 of both tensor files
Each file is written to a temporary name and renamed into place, the JSON last, so a crash
at any instant leaves the previous checkpoint whole and readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from darm.errors import DarmError
from darm.models import ARModel, create_model

FORMAT_VERSION = 1


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path onto path (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, list]:
    """Flatten an optimiser's state_dict into named tensors + JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _optimizer_state(tensors: dict, groups: list) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("state."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    tag: str,
    model: ARModel,
    model_name: str,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write TAG.{safetensors,optim.safetensors,json} into run_dir; returns the JSON path."""
    run_dir = Path(run_dir)
    weights = run_dir / f"{tag}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp))
    record = {
        "format": FORMAT_VERSION,
        "model": model_name,
        "config": model.config_dict(),
        **meta,
        "sha256": {"weights": _sha256(weights)},
    }
    if optimizer is not None:
        optim = run_dir / f"{tag}.optim.safetensors"
        tensors, groups = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        atomic_write(optim, lambda tmp: save_file(tensors, tmp))
        record["optimizer"] = groups
        record["sha256"]["optim"] = _sha256(optim)
    path = run_dir / f"{tag}.json"
    atomic_write_text(path, json.dumps(record, indent=1))
    return path


def resolve(path: str | Path) -> Path:
    """A run folder (its best, else last checkpoint) or a checkpoint's .json / .safetensors."""
    path = Path(path)
    if path.is_dir():
        for tag in ("best", "last"):
            if (path / f"{tag}.json").exists():
                return path / f"{tag}.json"
        raise DarmError(f"no checkpoint (best.json or last.json) in {path}")
    if path.suffix == ".safetensors":
        path = path.with_name(
            path.name.removesuffix(".optim.safetensors").removesuffix(".safetensors") + ".json"
        )
    if not path.exists():
        raise DarmError(f"checkpoint {path} does not exist")
    return path


def _load_tensors(path: Path, expected_sha: str | None, what: str) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise DarmError(f"{what} file {path} is missing")
    if expected_sha is None:
        raise DarmError(f"checkpoint records no hash for {path.name}; refusing to load it")
    if _sha256(path) != expected_sha:
        raise DarmError(f"{path} does not match the hash in its checkpoint (truncated or altered)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise DarmError(f"cannot read {path} as safetensors: {e}") from None


def read_record(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = resolve(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DarmError(f"{path} is not a darm checkpoint (invalid JSON: {e})") from None
    if not isinstance(record, dict) or not {"model", "config", "sha256"} <= set(record):
        raise DarmError(f"{path} is not a darm checkpoint (missing model, config or sha256)")
    if record.get("format") != FORMAT_VERSION:
        raise DarmError(f"{path} has checkpoint format {record.get('format')!r}, expected 1")
    return path, record


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint and load its weights -> (model, record, json_path)."""
    path, record = read_record(path)
    config = record["config"]
    if not isinstance(config, dict):
        raise DarmError(f"{path}: config must be a JSON object")
    try:
        model = create_model(record["model"], **config)
    except (TypeError, ValueError) as e:
        raise DarmError(f"{path}: invalid model config: {e}") from None
    tag = path.name.removesuffix(".json")
    state = _load_tensors(
        path.with_name(f"{tag}.safetensors"), record["sha256"].get("weights"), "weights"
    )
    load_weights(model, state, path)
    return model.to(device), record, path


def load_weights(model: ARModel, state: dict[str, torch.Tensor], where: Path) -> None:
    """Strict load with a one-line explanation of any mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{k} has shape {tuple(state[k].shape)}, model wants {tuple(expected[k].shape)}"
            )
        raise DarmError(f"{where}: weights do not match the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def load_training_state(path: Path, record: dict, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimiser and the RNG of a checkpoint saved during training."""
    tag = path.name.removesuffix(".json")
    tensors = _load_tensors(
        path.with_name(f"{tag}.optim.safetensors"), record["sha256"].get("optim"), "optimiser"
    )
    try:
        optimizer.load_state_dict(_optimizer_state(tensors, record["optimizer"]))
    except (KeyError, ValueError, RuntimeError) as e:
        raise DarmError(f"{path}: optimiser state does not match: {e}") from None
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
