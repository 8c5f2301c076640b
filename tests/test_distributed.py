"""Data parallelism: N gloo ranks on CPU train exactly like one process with the same global
batch; only rank 0 writes; gradient accumulation changes memory, not the result."""

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from darm.data import load_data
from darm.step import micro_batches
from darm.train import train
from darm.train_config import TrainConfig
from tests.conftest import tiny_model, write_names

CFG = dict(steps=6, batch_size=8, warmup=2, eval_every=3, eval_batch_size=5, seed=3)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(fn, folder: Path, world: int = 2) -> None:
    """mp.spawn `world` gloo ranks on a fresh port. A rank killed by a signal (a gloo abort:
    seen once in ~30 runs, on a fresh clone, and not reproduced since) gets one retry on a
    new port; an exception, or a second death, fails the test."""
    try:
        mp.spawn(fn, args=(world, free_port(), str(folder)), nprocs=world, join=True)
    except mp.ProcessExitedException as e:
        print(f"retrying once after: {e}")
        mp.spawn(fn, args=(world, free_port(), str(folder)), nprocs=world, join=True)


def torchrun(args: list[str], out: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m darm ARGS --out OUT` on a fresh port, with the retry
    of spawn_ranks: a rank killed by SIGABRT (the same rare gloo abort, "terminate called
    without an active exception") gets one more try in a clean OUT."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", "--master_addr=127.0.0.1", "-m", "darm", *args,
               "--out", str(out)]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if done.returncode == 0 or "(SIGABRT)" not in done.stderr or attempt:
            return done
        print(f"retrying once after a rank's SIGABRT:\n{done.stderr[-2000:]}")
        shutil.rmtree(out, ignore_errors=True)


def run_training(data_path: Path, run_dir: Path, **overrides):
    data = load_data(str(data_path))
    model = tiny_model("gru", vocab_size=data.vocab_size, seq_len=data.seq_len)
    train(model, "gru", data, TrainConfig(**{**CFG, **overrides}), run_dir, progress=False)
    return model


def _rank_main(rank: int, world: int, port: int, folder: str) -> None:
    """One gloo rank; every rank is given its own run folder, so a write by rank > 0 shows."""
    from darm import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    try:
        folder = Path(folder)
        run_training(folder / "names.txt", folder / f"rank{rank}", grad_accum=2)
    finally:
        distributed.cleanup()


def _every_model_rank_main(rank: int, world: int, port: int, folder: str) -> None:
    """Two steps of every registered model, conditional, with micro-batches, on 2 ranks."""
    from darm import distributed
    from darm.models import list_models, reads_images

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    try:
        data = load_data("digits")
        cfg = TrainConfig(steps=2, batch_size=8, eval_every=2, grad_accum=2, eval_batch_size=400)
        for name in list_models():
            extra = {"image_shape": (8, 8)} if reads_images(name) else {}
            model = tiny_model(name, vocab_size=17, seq_len=64, num_classes=10, **extra)
            train(model, name, data, cfg, Path(folder) / name, progress=False)
    finally:
        distributed.cleanup()


def _late_rank_main(rank: int, world: int, port: int, folder: str) -> None:
    """A --budget run planned again on 2 ranks whose clocks start 0.3 s apart (rank 1 is
    late after the DDP set-up): they must agree on every new step count, or their
    collectives stop matching."""
    import time

    import darm.train
    from darm import distributed
    from darm.budget import Plan

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    meta = darm.train.data_meta
    if rank == 1:  # called between the DDP set-up and the start of the clock

        def late(*args):
            time.sleep(0.3)
            return meta(*args)

        darm.train.data_meta = late
    try:
        data = load_data("digits")
        model = tiny_model("markov", vocab_size=17, seq_len=64)
        cfg = TrainConfig(steps=40, batch_size=8, warmup=5, eval_every=10, eval_batch_size=400)
        plan = Plan(steps=40, passes=4, step_s=0.1, pass_s=0.1)  # far too slow a timing
        folder = Path(folder) / f"rank{rank}"
        state = train(
            model, "markov", data, cfg, folder, progress=False, max_seconds=4.0, plan=plan
        )
        (folder.parent / f"state{rank}.json").write_text(json.dumps(state))
    finally:
        distributed.cleanup()


def trajectory(run_dir: Path) -> list[float]:
    """Train and validation nats/dim of every log row (validation at evaluations), flattened."""
    with open(run_dir / "log.csv") as f:
        rows = list(csv.DictReader(f))
    keys = ("train_nats_per_dim", "valid_nats_per_dim")
    return [float(r[k]) for r in rows for k in keys if r[k]]


def test_micro_batches_cover_the_global_batch_once():
    x = torch.arange(10)[:, None]  # (B=10, D=1)
    rows = [
        m[0][:, 0].tolist()
        for rank in range(3)
        for m in micro_batches((x, None, None), rank, world_size=3, grad_accum=2)
    ]
    assert sorted(sum(rows, [])) == list(range(10))
    assert all(1 <= len(r) <= 2 for r in rows)


def test_each_rank_gets_its_own_gpu():
    from darm.distributed import Context, rank_device
    from darm.errors import DarmError

    ctx = Context(rank=1, world_size=2, local_rank=1)
    assert rank_device(torch.device("cuda"), ctx) == torch.device("cuda", 1)
    assert rank_device(torch.device("cpu"), ctx) == torch.device("cpu")
    with pytest.raises(DarmError, match="pass --device cuda, not cuda:0"):
        rank_device(torch.device("cuda", 0), ctx)  # all ranks on GPU 0: NCCL refuses
    assert rank_device(torch.device("cuda", 0), Context()) == torch.device("cuda", 0)


def test_grad_accum_gives_the_same_weights(tmp_path):
    path = write_names(tmp_path)
    one = run_training(path, tmp_path / "a")
    accumulated = run_training(path, tmp_path / "b", grad_accum=4)
    for k, v in one.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[k], v, rtol=0, atol=1e-6)


def test_two_gloo_ranks_match_one_process(tmp_path):
    path = write_names(tmp_path)
    spawn_ranks(_rank_main, tmp_path)
    assert not (tmp_path / "rank1").exists(), "rank 1 wrote files"
    torch.set_num_threads(1)
    try:
        single = run_training(path, tmp_path / "single")
    finally:
        torch.set_num_threads(2)
    # same per-eval train and (all-reduced) validation losses, same final weights
    ref = trajectory(tmp_path / "single")
    assert len(ref) == 4 and trajectory(tmp_path / "rank0") == pytest.approx(ref, abs=1e-5)
    weights = load_file(tmp_path / "rank0" / "last.safetensors")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=1e-5)


def test_every_model_trains_on_two_ranks(tmp_path):
    """DDP waits forever for a parameter that gets no gradient unless told: each family,
    whatever its unused parameters, must train under 2 ranks."""
    spawn_ranks(_every_model_rank_main, tmp_path)
    from darm.models import list_models, reads_images

    for name in list_models():
        assert (tmp_path / name / "last.json").exists(), name
        # trained: its weights moved from the ones it started with, and stayed finite
        extra = {"image_shape": (8, 8)} if reads_images(name) else {}
        start = tiny_model(name, vocab_size=17, seq_len=64, num_classes=10, **extra)
        weights = load_file(tmp_path / name / "last.safetensors")
        assert all(w.isfinite().all() for w in weights.values()), name
        assert any(not torch.equal(weights[k], v) for k, v in start.state_dict().items()), name
        log = (tmp_path / name / "log.csv").read_text().splitlines()
        assert math.isfinite(float(log[-1].split(",")[3])), name  # validation NLL at step 2


def test_ranks_planned_again_agree_on_the_steps(tmp_path):
    spawn_ranks(_late_rank_main, tmp_path)
    states = [json.loads((tmp_path / f"state{r}.json").read_text()) for r in (0, 1)]
    assert states[0]["steps"] == states[1]["steps"] > 40  # planned again, the same
    assert states[0]["step"] == states[1]["step"]


def test_a_multi_node_run_records_how_its_node_was_launched(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from darm.distributed import Context
    from darm.run import invocation

    monkeypatch.chdir(tmp_path)
    args = SimpleNamespace(argv=["train", "--data", "names"])
    one_node = {"LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29400"}
    for name, value in one_node.items():
        monkeypatch.setenv(name, value)
    assert invocation(args, Context(0, 2)).endswith(
        "torchrun --nproc-per-node=2 -m darm train --data names"
    )  # one node: torchrun finds its own port, so none is recorded
    monkeypatch.setenv("GROUP_RANK", "0")
    assert invocation(args, Context(0, 8)).endswith(
        "torchrun --nnodes=4 --node-rank=0 --master-addr=10.0.0.7 --master-port=29400 "
        "--nproc-per-node=2 -m darm train --data names"
    )


def test_torchrun_cli_two_ranks(tmp_path):
    """`torchrun --nproc_per_node=2 -m darm train` ends cleanly, rank 0 alone reports, and
    its log matches one process on the same global batch."""
    path = write_names(tmp_path)
    common = ["-m", "darm", "train", "--data", str(path), "--model", "gru",
              "--set", "n_embd=8", "--set", "n_hidden=16", "--steps", "6", "--batch-size", "8",
              "--eval-every", "3", "--quiet", "--samples", "2", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.Popen(  # one process beside the two ranks
        [sys.executable, *common, "--out", str(tmp_path / "one")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    two = torchrun(common[2:], tmp_path / "two")
    assert one.wait(timeout=120) == 0, one.communicate()[1]
    assert two.returncode == 0, two.stderr
    out = two.stdout
    assert out.count("test:") == 1 and "on 2 ranks" in out
    assert out.count("step 3: train") == 1  # rank 1's (disabled) progress bar says nothing
    assert trajectory(tmp_path / "two") == pytest.approx(trajectory(tmp_path / "one"), abs=1e-5)
    for name in ("results.json", "samples.txt", "loss.png", "best.json", "last.json"):
        assert (tmp_path / "two" / name).exists(), name
    assert not list((tmp_path / "two").glob("*.staged")) and not list((tmp_path / "two").glob(".*"))


def test_torchrun_says_nothing_of_a_1x1_convs_gradient_strides(tmp_path):
    """gated_pixelcnn's 1x1 link gets its weight gradient with other strides in its size-1
    dimensions (at this width and batch): the same memory layout, which PyTorch's DDP warned
    of on every rank."""
    args = ["train", "--data", "digits", "--model", "gated_pixelcnn", "--set", "n_layer=2",
            "--steps", "1", "--valid-examples", "8", "--quiet", "--samples", "0",
            "--threads", "1"]  # fmt: skip
    done = torchrun(args, tmp_path / "gated")
    assert done.returncode == 0, done.stderr
    assert "Grad strides" not in done.stderr


def test_torchrun_budget_plans_one_step_count_for_both_ranks(tmp_path):
    """--budget without --steps under torchrun: the ranks time the probe through DDP and stop
    it together (a rank that stopped alone would leave the other waiting in an all-reduce)."""
    path = write_names(tmp_path)
    args = ["train", "--data", str(path), "--model", "markov", "--set", "n_hidden=8", "--set",
            "n_embd=4", "--batch-size", "8", "--budget", "4s", "--quiet", "--samples", "0",
            "--threads", "1"]  # fmt: skip
    done = torchrun(args, tmp_path / "r")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "r" / "last.json").read_text())
    planned = record["train"]["steps"]  # as first planned, or planned again as it trained
    assert done.stdout.count("--budget 4s: planned ") == 1  # rank 0 alone
    assert f"planned {planned} steps" in done.stdout or f"again as {planned}," in done.stdout
    assert 0 < record["step"] <= planned


def test_a_rank_lost_is_said_in_one_line(monkeypatch):
    """A rank killed (out of memory, say) breaks the others' next all-reduce with gloo's
    RuntimeError: said as the group's failure, in a line, not as a traceback of darm's."""
    from darm.cli import rank_lost

    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
        "[127.0.0.1]:28554: Connection reset by peer. This is typically caused by a remote "
        "worker hanging or bugs in the application."
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_lost(gloo) == "Read error [127.0.0.1]:28554: Connection reset by peer"
    assert rank_lost(torch.distributed.DistBackendError("NCCL watchdog")) == "NCCL watchdog"
    assert rank_lost(torch.distributed.DistNetworkError("port in use")) is None  # joining
    assert rank_lost(RuntimeError("shape mismatch")) is None  # darm's own bugs still show
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert rank_lost(gloo) is None  # one process: no group to blame
