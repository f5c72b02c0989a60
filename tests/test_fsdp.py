"""FSDP (jobs/accelerate/fsdp.yaml): whole weights in checkpoints, exact resume, LAMB on whole-tensor norms.

Accelerate runs FSDP on GPUs only. On the CPU, tests/fsdp_on_cpu.py switches its CPU data-parallel
state to FSDP, so that Accelerate's own FSDP2 preparation shards the model (torch's ``fully_shard``
works with gloo) and the real ``bertpre pretrain`` runs on it: these tests run on any machine. The
last test runs the unmodified command on two GPUs where there are.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from bertpre.training.checkpoint import TrainerState, list_checkpoints, load_checkpoint, save_checkpoint
from bertpre.core.config import load_config
from bertpre.core.configs import ModelConfig, PretrainConfig
from bertpre.core.errors import BertpreError
from bertpre.model.bert import BertForPreTraining, bert_config
from bertpre.training.optim import Lamb, build_optimizer, build_scheduler
from bertpre.training.sharding import full_model_state_dict, full_optimizer_state_dict, refuse_unsupported_fsdp

from .conftest import REPO, prepare_wiki64

FSDP_CONFIG = REPO / "jobs" / "accelerate" / "fsdp.yaml"
DRIVER = Path(__file__).parent / "fsdp_on_cpu.py"
OPTIONS = ["--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "16",
           "--per-device-batch-size", "8", "--learning-rate", "2e-3", "--warmup-steps", "5", "--log-every", "5",
           "--eval-every", "20", "--checkpoint-every", "10", "--num-workers", "1", "--report-to", "none",
           "--model.hidden-dropout-prob", "0", "--model.attention-probs-dropout-prob", "0"]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn_two(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` in two processes joined by a gloo process group's address."""
    torch.multiprocessing.spawn(worker, args=(free_port(), *args), nprocs=2)


def join_group(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)


def leave_group() -> None:
    """End a spawned worker once every rank is done: a barrier, the group destroyed, and an exit that skips
    interpreter teardown, where gloo's worker threads can still hold tensors and abort the process
    (SIGABRT, "terminate called without an active exception"; seen once in CI, pytorch/pytorch#179291)."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)


def tiny_model(seed: int) -> BertForPreTraining:
    torch.manual_seed(seed)
    return BertForPreTraining(bert_config(ModelConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, intermediate_size=64)))


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1, 101, (4, 12), generator=generator),
            "labels": torch.randint(1, 101, (4, 12), generator=generator),
            "next_sentence_label": torch.tensor([0, 1, 1, 0])}


# ---- LAMB on shards (two processes, gloo) --------------------------------------------------------


def lamb_problem(step: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights and gradients whose halves differ by orders of magnitude: the norm of one shard says
    nothing about the whole tensor's. Odd sizes split unevenly; a one-element tensor leaves a shard empty."""
    generator = torch.Generator().manual_seed(step)
    shapes = [(6, 4), (5, 3), (7,), (1,)]
    weights, grads = [], []
    for shape in shapes:
        scale = torch.ones(shape[0])
        scale[: shape[0] // 2] = 30.0
        scale = scale.reshape(-1, *[1] * (len(shape) - 1))
        weights.append(torch.randn(shape, generator=generator) * scale)
        grads.append(torch.randn(shape, generator=generator) / scale)
    return weights, grads


def lamb_on_shards(rank: int, port: int, output: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    join_group(rank, port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    weights, _ = lamb_problem(0)
    parameters = [torch.nn.Parameter(distribute_tensor(w, mesh, [Shard(0)])) for w in weights]
    optimizer = Lamb(parameters, lr=0.1, weight_decay=0.01)
    for step in range(1, 4):
        for parameter, grad in zip(parameters, lamb_problem(step)[1]):
            parameter.grad = distribute_tensor(grad, mesh, [Shard(0)])
        optimizer.step()
    torch.save([p.full_tensor() for p in parameters], output / f"rank{rank}.pt")
    leave_group()


def test_lamb_on_fsdp_shards_takes_the_step_it_takes_on_whole_tensors(tmp_path: Path) -> None:
    weights, _ = lamb_problem(0)
    whole = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = Lamb(whole, lr=0.1, weight_decay=0.01)
    for step in range(1, 4):
        for parameter, grad in zip(whole, lamb_problem(step)[1]):
            parameter.grad = grad
        optimizer.step()
    spawn_two(lamb_on_shards, tmp_path)
    for rank in range(2):
        for sharded, expected in zip(torch.load(tmp_path / f"rank{rank}.pt"), whole):
            torch.testing.assert_close(sharded, expected.detach(), rtol=1e-6, atol=1e-6)


# ---- checksums, save and load (two processes, Accelerate, gloo) ----------------------------------


def checkpoint_worker(rank: int, port: int, output: Path) -> None:
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin

    from .fsdp_on_cpu import use_fsdp_on_cpu

    join_group(rank, port)
    accelerator = Accelerator(cpu=True)
    results = {}

    def parts(seed: int) -> tuple:
        model = tiny_model(seed)
        optimizer = build_optimizer(model, "adamw", 1e-3, 0.01)
        return model, optimizer, build_scheduler(optimizer, 1, 10)

    # Data parallelism: a process whose weights drifted is caught.
    config = load_config(PretrainConfig, None, {"output": str(output / "ddp"), "max_steps": 10})
    model, optimizer, scheduler = parts(0)
    with torch.no_grad():
        model.nsp.bias.add_(float(rank))
    try:
        save_checkpoint(accelerator, model, optimizer, scheduler, TrainerState(step=1), config)
    except BertpreError as error:
        results["ddp_error"] = str(error)

    # FSDP, sharded by Accelerate's FSDP2 preparation as jobs/accelerate/fsdp.yaml asks.
    use_fsdp_on_cpu(accelerator, FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["EncoderLayer"]))
    config = load_config(PretrainConfig, None, {"output": str(output / "fsdp"), "max_steps": 10})
    model, optimizer, scheduler = parts(0)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.backward(model(**random_batch(rank)).loss)
    optimizer.step()
    scheduler.step()
    model.eval()  # an evaluation's forward pass leaves the root unit's parameters gathered
    with torch.no_grad():
        model(**random_batch(2))
    model.train()
    path = save_checkpoint(accelerator, model, optimizer, scheduler, TrainerState(step=1), config)
    saved_optimizer = full_optimizer_state_dict(model, optimizer)
    # A fresh model and optimizer on other weights, loaded from the checkpoint.
    model, optimizer, scheduler = parts(1)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = load_checkpoint(path, accelerator, model, optimizer, scheduler)
    results.update(checksums=state.rank_checksums, scheduler_steps=scheduler.last_epoch)
    loaded_weights, loaded_optimizer = full_model_state_dict(model), full_optimizer_state_dict(model, optimizer)
    if accelerator.is_main_process:
        torch.save({"weights": loaded_weights, "optimizer": loaded_optimizer, "saved_optimizer": saved_optimizer},
                   output / "loaded.pt")
    (output / f"rank{rank}.json").write_text(json.dumps(results))
    leave_group()


@pytest.fixture(scope="module")
def checkpoint_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("fsdp-checkpoint")
    spawn_two(checkpoint_worker, output)
    return output


def test_weight_checksums_still_catch_data_parallel_processes_that_drifted_apart(checkpoint_results: Path) -> None:
    for rank in range(2):
        error = json.loads((checkpoint_results / f"rank{rank}.json").read_text()).get("ddp_error", "")
        assert "processes hold different weights" in error


def test_under_fsdp_every_process_records_the_checksum_of_the_whole_weights(checkpoint_results: Path) -> None:
    checkpoint = list_checkpoints(checkpoint_results / "fsdp")[-1]
    whole = sum(t.double().sum().item() for t in load_file(str(checkpoint / "model.safetensors")).values())
    for rank in range(2):
        checksums = json.loads((checkpoint_results / f"rank{rank}.json").read_text())["checksums"]
        assert checksums[0] == checksums[1] and checksums[0] == pytest.approx(whole, rel=1e-12)


def test_an_fsdp_checkpoint_holds_whole_tensors_and_loads_back_into_shards(checkpoint_results: Path) -> None:
    checkpoint = list_checkpoints(checkpoint_results / "fsdp")[-1]
    saved = load_file(str(checkpoint / "model.safetensors"))
    reference = {k: v for k, v in tiny_model(0).state_dict().items() if k != "mlm.word_embeddings.weight"}
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in reference.items()}
    loaded = torch.load(checkpoint_results / "loaded.pt", weights_only=False)
    for name, tensor in saved.items():
        assert torch.equal(loaded["weights"][name], tensor), name
    saved_state, loaded_state = loaded["saved_optimizer"]["state"], loaded["optimizer"]["state"]
    assert saved_state.keys() == loaded_state.keys() and "bert.embeddings.word.weight" in saved_state
    for name, moments in saved_state.items():
        assert moments["exp_avg"].shape == saved[name].shape and moments["exp_avg"].abs().sum() > 0
        for key, value in moments.items():
            assert torch.equal(loaded_state[name][key], value), (name, key)
    assert all(json.loads((checkpoint_results / f"rank{r}.json").read_text())["scheduler_steps"] == 1
               for r in range(2))


def test_a_replica_without_first_copies_checksums_zero_and_still_joins_the_reduce(monkeypatch) -> None:
    """Hybrid sharding: a process whose shards are all later copies counts nothing, yet must reach the all-reduce."""
    from accelerate.utils import DistributedType

    from bertpre.training import checkpoint

    monkeypatch.setattr(checkpoint, "holds_first_copy", lambda tensor: False)
    model = tiny_model(0)
    replica = SimpleNamespace(distributed_type=DistributedType.NO, device=torch.device("cpu"),
                              unwrap_model=lambda module: module, gather=lambda tensor: tensor)
    assert checkpoint._rank_checksums(replica, model) == [0.0]
    total = checkpoint.local_weight_sum([], torch.device("cpu"))
    assert total.dtype == torch.float64 and total.item() == 0.0


# ---- what is refused ------------------------------------------------------------------------------


def test_fsdp1_and_an_fsdp_config_that_accelerate_ignored_are_refused_in_one_line(monkeypatch) -> None:
    from accelerate.utils import DistributedType

    fsdp1 = SimpleNamespace(distributed_type=DistributedType.FSDP,
                            state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=1)))
    with pytest.raises(BertpreError, match="fsdp_version: 1, which bertpre does not support"):
        refuse_unsupported_fsdp(fsdp1)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(BertpreError, match="asks for FSDP .* GPUs only"):
        refuse_unsupported_fsdp(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
    fsdp2 = SimpleNamespace(distributed_type=DistributedType.FSDP,
                            state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=2)))
    refuse_unsupported_fsdp(fsdp2)


def test_finetune_refuses_an_fsdp_launch_config_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from bertpre.cli import main

    from .tiny_glue import write_tiny_glue, write_tiny_model

    model, data = write_tiny_model(tmp_path / "model"), write_tiny_glue(tmp_path / "glue")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    status = main(["finetune", "--model", str(model), "--task", "sst2", "--data-dir", str(data), "--epochs", "1",
                   "--cpu", "--report-to", "none", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0, err
    assert err.startswith("bertpre: error: the accelerate config asks for FSDP (distributed_type: FSDP)")
    assert not (tmp_path / "out" / "model").exists()


# ---- whole runs: two processes under FSDP on the CPU ---------------------------------------------


def pretrain_command(mode: str, data: Path, output: Path, *options: str) -> list[str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no",
              "--main_process_port", str(free_port())]
    if mode == "fsdp":
        launch += ["--config_file", str(FSDP_CONFIG), str(DRIVER)]
    else:
        launch += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no", "-m", "bertpre"]
    return [*launch, "pretrain", "--data", str(data), "--output", str(output), *OPTIONS, "--cpu", "true", *options]


def run(command: list[str], expect_success: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=CPU_ONLY)
    if expect_success:
        assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    return result


def losses(output: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def final(output: Path) -> tuple[dict[str, torch.Tensor], dict]:
    checkpoint = list_checkpoints(output)[-1]
    return (load_file(str(checkpoint / "model.safetensors")),
            json.loads((checkpoint / "trainer_state.json").read_text()))


@pytest.fixture(scope="module")
def wiki_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("fsdp") / "wiki64", eval_fraction=0.2)


@pytest.fixture(scope="module")
def runs(wiki_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 steps three ways: FSDP at once, FSDP stopped at step 10 and resumed, and DDP."""
    root = tmp_path_factory.mktemp("fsdp-runs")
    run(pretrain_command("fsdp", wiki_data, root / "whole", "--max-steps", "20"))
    run(pretrain_command("fsdp", wiki_data, root / "resumed", "--max-steps", "10", "--schedule-steps", "20"))
    resumed = run(pretrain_command("fsdp", wiki_data, root / "resumed", "--max-steps", "20", "--schedule-steps", "20"))
    assert "resumed from" in resumed.stdout and "at step 10" in resumed.stdout
    run(pretrain_command("ddp", wiki_data, root / "ddp", "--max-steps", "20"))
    return {"whole": root / "whole", "resumed": root / "resumed", "ddp": root / "ddp"}


@pytest.mark.slow
def test_a_resumed_fsdp_run_ends_bit_identical_to_the_uninterrupted_one(runs: dict[str, Path]) -> None:
    (whole, whole_state), (resumed, resumed_state) = final(runs["whole"]), final(runs["resumed"])
    assert whole_state["step"] == resumed_state["step"] == 20
    assert losses(runs["resumed"]) == losses(runs["whole"])
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    total = sum(t.double().sum().item() for t in whole.values())
    for state in (whole_state, resumed_state):
        assert state["rank_checksums"][0] == state["rank_checksums"][1] == pytest.approx(total, rel=1e-12)


@pytest.mark.slow
def test_fsdp_trains_as_ddp_does(runs: dict[str, Path]) -> None:
    fsdp, ddp = losses(runs["whole"]), losses(runs["ddp"])
    assert fsdp.keys() == ddp.keys() == {5, 10, 15, 20}
    for step in fsdp:  # stated tolerance: the gradient reductions sum in another order
        assert fsdp[step] == pytest.approx(ddp[step], abs=1e-4), step
    (fsdp_weights, _), (ddp_weights, _) = final(runs["whole"]), final(runs["ddp"])
    for name in ddp_weights:
        torch.testing.assert_close(fsdp_weights[name], ddp_weights[name], rtol=0, atol=5e-4)


@pytest.mark.slow
def test_an_fsdp_checkpoint_exports_whole_weights_that_transformers_loads(runs: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    import transformers

    from bertpre.core.configs import ExportConfig
    from bertpre.export.export import export_checkpoint

    exported = export_checkpoint(ExportConfig(checkpoint=str(runs["whole"]), output=str(tmp_path / "hf")))
    model, info = transformers.BertForPreTraining.from_pretrained(str(exported), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    saved, _ = final(runs["whole"])
    assert torch.equal(model.bert.embeddings.word_embeddings.weight.detach(), saved["bert.embeddings.word.weight"])
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()


@pytest.mark.slow
def test_a_checkpoint_resumes_only_under_the_parallelism_it_was_saved_with(runs: dict[str, Path], wiki_data: Path,
                                                                          tmp_path: Path) -> None:
    fsdp_run, ddp_run = tmp_path / "fsdp", tmp_path / "ddp"
    shutil.copytree(runs["whole"], fsdp_run)
    shutil.copytree(runs["ddp"], ddp_run)
    single = [sys.executable, "-m", "bertpre", "pretrain", "--data", str(wiki_data), "--output", str(fsdp_run),
              *OPTIONS, "--cpu", "true", "--max-steps", "25"]
    result = run(single, expect_success=False)
    assert result.returncode == 2 and "saved under FSDP" in result.stderr and "Traceback" not in result.stderr
    result = run(pretrain_command("fsdp", wiki_data, ddp_run, "--max-steps", "25"), expect_success=False)
    assert result.returncode != 0 and "bertpre: error:" in result.stderr and "saved without FSDP" in result.stderr


@pytest.mark.slow
def test_lamb_under_fsdp_trains_as_under_ddp(wiki_data: Path, tmp_path: Path) -> None:
    lamb = ["--optimizer", "lamb", "--max-steps", "10", "--eval-every", "0"]
    run(pretrain_command("fsdp", wiki_data, tmp_path / "fsdp", *lamb))
    run(pretrain_command("ddp", wiki_data, tmp_path / "ddp", *lamb))
    fsdp, ddp = losses(tmp_path / "fsdp"), losses(tmp_path / "ddp")
    assert fsdp.keys() == ddp.keys() == {5, 10}
    for step in fsdp:
        assert fsdp[step] == pytest.approx(ddp[step], abs=1e-5), step
    (fsdp_weights, _), (ddp_weights, _) = final(tmp_path / "fsdp"), final(tmp_path / "ddp")
    for name in ddp_weights:  # per-shard trust ratios would put these ~1e-3 apart
        torch.testing.assert_close(fsdp_weights[name], ddp_weights[name], rtol=0, atol=2e-5)


@pytest.mark.slow
def test_the_fsdp_config_on_a_machine_without_gpus_is_refused_in_one_line(wiki_data: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
               "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "bertpre", "pretrain",
               "--data", str(wiki_data), "--output", str(tmp_path / "run"), *OPTIONS, "--max-steps", "2"]
    result = run(command, expect_success=False)
    assert result.returncode != 0
    assert "bertpre: error: the accelerate config asks for FSDP (distributed_type: FSDP)" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("limit, world", [(50, 8), (3, 2), (1, 2), (4, 2), (0, 2)])
def test_every_process_makes_as_many_evaluation_passes_and_each_batch_counts_once(limit: int, world: int) -> None:
    from bertpre.training.pretrain import evaluation_batches

    passes = [evaluation_batches(limit, rank, world) for rank in range(world)]
    assert {len(p) for p in passes} == {math.ceil(limit / world)}  # under FSDP each pass is a collective
    counted = sorted(index for p in passes for index, counts in p if counts)
    assert counted == list(range(limit))
    assert all(0 <= index < max(limit, 1) for p in passes for index, _ in p)
    if limit % world == 0:  # divides evenly: the batches dealt as before, none re-run
        assert passes == [[(i, True) for i in range(rank, limit, world)] for rank in range(world)]


def run_or_kill(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a launch; past ``timeout`` fail, killing its workers too (they run in sessions of their own, and a
    hung collective would keep them waiting long after the test)."""
    import psutil

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CPU_ONLY)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in [*psutil.Process(process.pid).children(recursive=True), process]:
            child.kill()
        process.communicate()
        pytest.fail(f"still running after {timeout:.0f} s (a collective that not every process reached?)")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def eval_metrics(output: Path) -> dict[int, dict[str, float]]:
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: {k: v for k, v in line.items() if k.startswith("eval_")}
            for line in lines if "eval_mlm_loss" in line}


@pytest.mark.slow
def test_fsdp_evaluation_over_an_odd_number_of_batches_finishes_and_matches_one_process(wiki_data: Path,
                                                                                       tmp_path: Path) -> None:
    # 3 eval batches on 2 processes: one process has a batch fewer, and under FSDP every forward pass is a collective
    options = ["--max-steps", "4", "--eval-every", "2", "--eval-batches", "3", "--checkpoint-every", "0"]
    result = run_or_kill(pretrain_command("fsdp", wiki_data, tmp_path / "fsdp", *options), timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    single = [sys.executable, "-m", "bertpre", "pretrain", "--data", str(wiki_data), "--output", str(tmp_path / "one"),
              *OPTIONS, "--cpu", "true", *options]
    run(single)
    fsdp, one = eval_metrics(tmp_path / "fsdp"), eval_metrics(tmp_path / "one")
    assert fsdp.keys() == one.keys() == {2, 4}
    for step in one:  # the same 3 batches and masks; the weights differ by the reductions' summation order
        assert fsdp[step].keys() == one[step].keys()
        for name, value in one[step].items():
            assert fsdp[step][name] == pytest.approx(value, rel=1e-5, abs=1e-3), (step, name)


# ---- GPUs: the unmodified command --------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_fsdp_on_two_gpus_checkpoints_resumes_and_exports(wiki_data: Path, tmp_path: Path) -> None:
    def launch(output: Path, *options: str) -> None:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
                   "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "bertpre", "pretrain",
                   "--data", str(wiki_data), "--output", str(output), *OPTIONS, *options]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"})
        assert result.returncode == 0, result.stderr[-5000:]

    for optimizer in ("adamw", "lamb"):
        whole, resumed = tmp_path / f"{optimizer}-whole", tmp_path / f"{optimizer}-resumed"
        launch(whole, "--optimizer", optimizer, "--max-steps", "20")
        launch(resumed, "--optimizer", optimizer, "--max-steps", "10", "--schedule-steps", "20")
        launch(resumed, "--optimizer", optimizer, "--max-steps", "20", "--schedule-steps", "20")
        (weights, state), (_, resumed_state) = final(whole), final(resumed)
        total = sum(t.double().sum().item() for t in weights.values())
        assert state["rank_checksums"][0] == state["rank_checksums"][1]
        assert math.isclose(state["rank_checksums"][0], total, rel_tol=1e-9)
        assert resumed_state["step"] == 20
        for step, loss in losses(whole).items():  # bf16 kernels need not be bit-reproducible on GPUs
            assert losses(resumed)[step] == pytest.approx(loss, rel=0.02), (optimizer, step)
