"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint `TAG` in a run folder is three files:
    TAG.safetensors        model weights
    TAG.optim.safetensors  optimiser state and RNG state (for exact resume)
    TAG.json               model name + config, data source + vocabulary, training state,
                           and the SHA-256 of both tensor files
Crash safety: every file is written to a temporary name and renamed (atomic on POSIX), but
three renames are not one. So a save first stages the tensor files as TAG.*.staged, then
renames the new JSON into place (the commit point), then renames the staged files onto
their final names. The JSON names its tensor files by SHA-256, and a loader takes whichever
of TAG.X / TAG.X.staged has the recorded hash: a kill at any instant leaves either the old
or the new checkpoint whole and readable, never a mixture.

Safety: nothing is unpickled; a file that does not have the recorded hash (truncated,
bit-flipped), tensors that do not fit the model, or a config the model rejects is refused
with a one-line DarmError. The JSON carries the hash of its own content too (sha256.record,
over a canonical serialisation), so an edited or corrupted record is refused as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from darm.config import changed_fields
from darm.errors import DarmError
from darm.files import atomic_write, atomic_write_text, fsync_folder
from darm.models import ARModel, get_entry, list_models
from darm.models.registry import build_model, family_source

FORMAT_VERSION = 2  # 2 adds sha256.record; format 1 (no record hash) is still read
STAGED = ".staged"  # suffix of tensor files written but not yet renamed into place
# first bytes of the files people mistake for checkpoints: pickle protocols 2-5, and zip
# (torch.save); named in the error so nobody is tempted to "just unpickle it"
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


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
    raw_weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write TAG.{safetensors,optim.safetensors,json} into run_dir; returns the JSON path.
    meta: the record's own fields, at least `step` and `data` (darm.data's data_meta, or {}
    for weights with no data to read again; read_record refuses a record without them).
    raw_weights: when the model holds averaged (EMA) weights, the training weights, which
    go beside the optimiser state so a resumed run trains on from them."""
    run_dir = Path(run_dir)
    for stale in run_dir.glob(f".{tag}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    finish_commit(run_dir, tag)
    weights = run_dir / f"{tag}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    staged = [weights]
    atomic_write(_staged(weights), lambda tmp: save_file(state, tmp))
    record = {
        "format": FORMAT_VERSION,
        "model": model_name,
        "config": model.config_dict(),
        "params": model.num_params(),
        **({"family_from": source} if (source := family_source(type(model))) else {}),
        **meta,
        "sha256": {"weights": _sha256(_staged(weights))},
    }
    if optimizer is not None:
        optim = run_dir / f"{tag}.optim.safetensors"
        tensors, groups = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        for name, value in (raw_weights or {}).items():
            tensors[f"raw.{name}"] = value.detach().cpu().contiguous()
        atomic_write(_staged(optim), lambda tmp: save_file(tensors, tmp))
        staged.append(optim)
        record["optimizer"] = groups
        record["sha256"]["optim"] = _sha256(_staged(optim))
    record["sha256"]["record"] = record_sha256(record)
    path = run_dir / f"{tag}.json"
    atomic_write_text(path, json.dumps(record, indent=1))  # the commit point
    for final in staged:
        os.replace(_staged(final), final)
    fsync_folder(run_dir)  # the renames, durable too (a lost one is recovered by its hash)
    return path


def finish_commit(run_dir: Path, tag: str) -> None:
    """Rename onto their final names the staged files of a save killed after its commit
    point (those the JSON's hashes name), before a new save stages over them: that would
    leave the JSON pointing at files that exist nowhere."""
    path = run_dir / f"{tag}.json"
    try:
        hashes = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no committed checkpoint (or an unreadable one): nothing to protect
    for key, name in (("weights", f"{tag}.safetensors"), ("optim", f"{tag}.optim.safetensors")):
        staged = _staged(run_dir / name)
        if staged.is_file() and hashes.get(key) == _sha256(staged):
            os.replace(staged, run_dir / name)


def record_sha256(record: dict[str, Any]) -> str:
    """SHA-256 of a record without its own hash, serialised canonically (sorted keys)."""
    body = {**record, "sha256": {k: v for k, v in record["sha256"].items() if k != "record"}}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _staged(path: Path) -> Path:
    return path.with_name(path.name + STAGED)


def resolve(path: str | Path) -> Path:
    """A run folder (its best, else last checkpoint) or a checkpoint's .json / .safetensors."""
    path = Path(path)
    if path.is_dir():
        for tag in ("best", "last"):
            if (path / f"{tag}.json").exists():
                return path / f"{tag}.json"
        runs = sorted(p.parent.name for p in path.glob("*/best.json"))  # a comparison's
        more = ", ..." if len(runs) > 4 else ""
        inside = f"; its runs: {', '.join(str(path / r) for r in runs[:4])}{more}" if runs else ""
        raise DarmError(f"no checkpoint (best.json or last.json) in {path}{inside}")
    if path.suffix == ".safetensors":
        path = path.with_name(
            path.name.removesuffix(".optim.safetensors").removesuffix(".safetensors") + ".json"
        )
    if not path.exists():
        raise DarmError(f"checkpoint {path} does not exist")
    return path


def beside(path: Path, suffix: str) -> Path:
    """The file of checkpoint `path` (its .json) with this suffix: .safetensors, the weights;
    .optim.safetensors, the optimiser state."""
    return path.with_name(path.name.removesuffix(".json") + suffix)


def weights_cut_short(path: Path) -> str | None:
    """What is wrong with the weights file of the checkpoint `path` (its .json) where it is
    missing, or shorter than its own header says (a copy or a full disk cut it); None if
    whole. Reads the header alone, not the hash of every weight, which loading checks: a
    listing of many large runs stays quick, and a file replaced by a save meanwhile (a run
    training beside) is whole either way."""
    weights = beside(path, ".safetensors")
    try:
        with open(weights, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")  # safetensors: u64 header length, JSON
            if size < 8 + n:
                return f"{weights.name} is cut short ({size:,} bytes, inside its header)"
            header = json.loads(f.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except FileNotFoundError:
        return f"{weights.name} is missing"
    except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError):
        return f"{weights.name} is not readable as safetensors"
    expected = 8 + n + max(ends, default=0)
    return (
        f"{weights.name} is cut short ({size:,} of {expected:,} bytes)" if size < expected else None
    )


def _weights_of(path: Path, record: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """(record, tensors): the weights `record` names. A save that commits while they are
    read (a run training beside `darm sample`, say) replaces them: then the record is read
    again and its new weights taken, where the old would be called corrupt. Refused: a
    record that stays the same while its weights do not match, one whose config changed
    (not a later save of the same network), and weights still moving after 5 retries."""
    retries = 5
    while True:
        try:
            return record, _load_tensors(
                beside(path, ".safetensors"), record["sha256"].get("weights"), "weights"
            )
        except DarmError:
            _, again = read_record(path)
            same = again["sha256"].get("weights") == record["sha256"].get("weights")
            if not retries or same or again["config"] != record["config"]:  # (not a later
                raise  # save of this run's network)
            record, retries = again, retries - 1


def _load_tensors(path: Path, expected_sha: str | None, what: str) -> dict[str, torch.Tensor]:
    """The tensors of `path`, or of its staged twin when a save was cut short after its
    commit point; whichever has the hash the JSON records."""
    if not isinstance(expected_sha, str):
        raise DarmError(f"checkpoint records no hash for {path.name}; refusing to load it")
    candidates = [p for p in (path, _staged(path)) if p.is_file()]
    if not candidates:
        raise DarmError(f"{what} file {path} is missing")
    for candidate in candidates:
        # parse the very bytes that were hashed; and no mmap (safetensors' load_file), whose
        # tensors die with SIGBUS if someone rewrites the file in place while we train
        try:
            blob = candidate.read_bytes()
        except FileNotFoundError:  # a staged file renamed into place since is_file()
            continue
        if hashlib.sha256(blob).hexdigest() == expected_sha:
            try:
                return load_tensors(blob)
            except (SafetensorError, OSError, ValueError) as e:
                raise DarmError(f"cannot read {candidate} as safetensors: {e}") from None
    raise DarmError(f"{path} does not match the hash in its checkpoint (truncated or altered)")


REQUIRED = {"model", "config", "sha256", "step", "data"}  # every darm checkpoint has them


def check_data_record(path: Path, record: dict) -> None:
    """What later reads trust in a record: a step count, and a vocabulary and end symbol
    that fit the model's L (one edited by hand would fail deep inside sampling)."""
    if record["step"] < 0:
        raise DarmError(f"{path}: step must be >= 0, got {record['step']}")
    data, L = record["data"], record["config"].get("vocab_size")
    vocab, eos = data.get("vocab"), data.get("eos")
    if vocab is not None and (not isinstance(vocab, list) or len(vocab) != L):
        raise DarmError(f"{path}: its vocabulary does not have the model's {L} symbols")
    if eos is not None and (not isinstance(eos, int) or not 0 <= eos < (L or 0)):
        raise DarmError(f"{path}: its end symbol {eos!r} is not one of the model's {L}")


def read_record(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = resolve(path)
    if path.is_dir():
        raise DarmError(f"{path} is a folder, not a checkpoint .json")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(PICKLE_MAGIC):
        raise DarmError(
            f"{path} is a pickle / torch.save file; darm reads only its own checkpoints "
            f"(JSON + safetensors) and never unpickles anything"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DarmError(f"{path} is not a darm checkpoint (invalid JSON: {e})") from None
    if not isinstance(record, dict) or not REQUIRED <= set(record):
        raise DarmError(
            f"{path} is not a darm checkpoint (missing {', '.join(sorted(REQUIRED - set(record)))})"
            if isinstance(record, dict) else f"{path} is not a darm checkpoint (not an object)"
        )  # fmt: skip
    # not a bool: True == 1 in Python, and `true` would pass for format 1 (no record hash)
    if isinstance(record.get("format"), bool) or record.get("format") not in (1, FORMAT_VERSION):
        raise DarmError(
            f"{path} has checkpoint format {record.get('format')!r}, expected 1 or {FORMAT_VERSION}"
        )
    expected_types = {"model": str, "config": dict, "sha256": dict, "step": int, "data": dict}
    expected_types.update({"train": dict, "optimizer": list})
    for key, kind in expected_types.items():
        value = record.get(key, kind())
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DarmError(f"{path}: field {key!r} must be a JSON {kind.__name__}")
    check_data_record(path, record)
    if record["format"] >= 2 and record["sha256"].get("record") != record_sha256(record):
        raise DarmError(
            f"{path} was altered after it was written (its content does not match its "
            f"sha256.record); darm refuses edited or corrupted checkpoints"
        )
    return path, record


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    overrides: dict[str, Any] | None = None,
):
    """Rebuild the model of a checkpoint and load its weights -> (model, record, json_path).
    The model comes in eval mode (dropout off), ready to score and sample, as a loaded
    network mostly is; `train()` (or model.train()) switches it back for training.
    overrides: config fields for fine-tuning: FREE_FIELDS (dropout) may change, and seq_len
    (D) for a model that goes on past D (max_dims None: markov, rnn, wavenet), whose weights
    do not depend on it; any other may only repeat its saved value (n_head=8 would load the
    same weights into another network, so it is refused, as `darm train --init --set`
    refuses it)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():  # torch's is an AssertionError
        raise DarmError(f"device {device} asked for, but no CUDA device is available")
    path, record = read_record(path)
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise TypeError(
            f"overrides must be a dict of config fields, got {type(overrides).__name__}"
        )
    free = {k: v for k, v in overrides.items() if k in FREE_FIELDS}
    model = model_of_record(record, path, free)
    if "seq_len" in overrides and model.max_dims is None:  # a window, a state, conv queues:
        free["seq_len"] = overrides["seq_len"]  # the same weights score any length D
        model = model_of_record(record, path, free)
    if k := network_change(model.config, overrides):
        raise DarmError(
            f"{path}: overrides {k}={overrides[k]!r} would load its weights into another "
            f"network (it has {k}={getattr(model.config, k)!r}); only "
            f"{', '.join(FREE_FIELDS)} may change (and seq_len, for a model without a "
            f"fixed context)"
        )
    record, state = _weights_of(path, record)
    load_weights(model, state, path)
    if overrides:  # the record describes the model returned, as parsed (dropout "0.1": 0.1)
        config = {k: getattr(model.config, k) for k in overrides}
        record = {**record, "config": {**record["config"], **config}}
    # what train() records as a fine-tune's start: the path, step and weights' hash
    model.loaded_from = {
        "path": os.path.realpath(path),
        "step": record.get("step"),
        "weights": record["sha256"].get("weights"),
    }
    return model.to(device).eval(), record, path


FREE_FIELDS = ("dropout",)  # regularisation: the loaded network computes what it did


def network_change(config, settings: dict, what: str = "override") -> str | None:
    """The first of `settings` outside FREE_FIELDS that changes the network `config`
    describes (compared as typed values: n_head="4" repeats 4), or None. what: how a bad
    value is named (--set)."""
    others = {k: v for k, v in settings.items() if k not in FREE_FIELDS}
    changed = changed_fields(config, others, what)
    return changed[0] if changed else None


def model_of_record(record: dict, path: Path, overrides: dict[str, Any] | None = None):
    """The network a checkpoint record describes, with new weights (a caller after its size
    alone builds it under `torch.device("meta")`: no weights at all)."""
    config = record["config"]
    if not isinstance(config, dict):
        raise DarmError(f"{path}: config must be a JSON object")
    if record["model"] not in list_models() and isinstance(record.get("family_from"), str):
        source = record["family_from"]  # a family of the user's own, not imported this time
        if source == "__main__":
            raise DarmError(
                f"unknown model {record['model']!r}: its family was defined in a script or "
                f"notebook; run that definition (its register_model) first"
            )
        raise DarmError(
            f"unknown model {record['model']!r}: its family came from {source}; import it "
            f"first (in Python, or darm --import {shlex.quote(source)} ...)"
        )
    try:
        config = saved_config(record["model"], config)
        model = build_model(record["model"], None, {**config, **(overrides or {})},
                            saved=True)  # fmt: skip
    except DarmError:  # its own words (an unknown model, a bad --set)
        raise
    except (TypeError, ValueError) as e:
        raise DarmError(f"{path}: invalid model config: {e}") from None
    return model


def saved_config(name: str, config: dict) -> dict:
    """A checkpoint's config as the family reads it now: one saved before a rule was added
    may break it harmlessly, or lack a field that says how an older darm built the network
    (markov: dropout on a table, which never acted; wavenet: last_res)."""
    upgrade = getattr(get_entry(name).config_cls, "from_saved", None)
    return upgrade(config) if upgrade else config


def load_weights(model: ARModel, state: dict[str, torch.Tensor], where: Path) -> None:
    """Strict load with a one-line explanation of any mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(state)
        if expected[k].shape != state[k].shape or expected[k].dtype != state[k].dtype
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{k} is {state[k].dtype} {tuple(state[k].shape)}, "
                f"model wants {expected[k].dtype} {tuple(expected[k].shape)}"
            )
        raise DarmError(f"{where}: weights do not match the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def load_training_state(
    path: Path, record: dict, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Restore the optimiser and the RNG of a checkpoint saved during training; returns the
    training weights saved beside them when the weights file holds an average (else {})."""
    tensors = _load_tensors(
        beside(path, ".optim.safetensors"), record["sha256"].get("optim"), "optimiser"
    )
    if "optimizer" not in record:
        raise DarmError(f"{path} holds no optimiser state; it cannot be resumed")
    try:
        optimizer.load_state_dict(_optimizer_state(tensors, record["optimizer"]))
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        raise DarmError(f"{path}: optimiser state does not match: {e}") from None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                raise DarmError(
                    f"{path}: optimiser state {key} has shape {tuple(value.shape)}, "
                    f"its parameter {tuple(p.shape)}"
                )
    if "rng.torch" in tensors:
        try:
            torch.set_rng_state(tensors["rng.torch"])
        except (RuntimeError, TypeError) as e:
            raise DarmError(f"{path}: invalid RNG state: {e}") from None
    return {k.removeprefix("raw."): v for k, v in tensors.items() if k.startswith("raw.")}
