"""The fit loop: it learns, resumes bit-identically, honours a time budget, and runs under DDP (gloo)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from recon.training import data
from recon.training.fit import FitConfig, WarmupCosine, fit, predict, start_at_identity
from recon.training.models import create_model
from recon.training.tasks import task_config

CFG = task_config("deblur")


def _tiny_setup(length: int = 16):
    clean = data.clean_images(data._TRAIN, 0, 6, 48, ("brick", "moon"))
    train = data.TrainingPairs(clean, CFG, crop=32, length=length, seed=0)
    valid = data.simulate_pairs(clean[:2], CFG, seed=1)
    return train, valid


def _model():
    torch.manual_seed(0)
    return create_model("cnn", n_filters=8)


def test_a_few_steps_lower_the_loss(tmp_path):
    train, valid = _tiny_setup()
    model = _model()
    before = float(((predict(model, valid.inputs) - valid.targets) ** 2).mean())
    cfg = FitConfig(steps=40, batch_size=4, lr=3e-3, warmup=5)  # epochs of 16 / 4 = 4 steps
    result = fit(model, train, valid, cfg, tmp_path, progress=False)
    after = float(((predict(result.model, valid.inputs) - valid.targets) ** 2).mean())
    assert after < 0.7 * before
    assert result.steps == 40 and len(result.history) == 10
    assert {"last.pt", "best.pt", "log.json"} <= {p.name for p in tmp_path.iterdir()}


def test_resume_continues_bit_identically(tmp_path):
    train, valid = _tiny_setup()
    cfg = FitConfig(steps=10, batch_size=4, lr=1e-3, warmup=3, loss="0.8*l1+0.2*ssim")  # epochs of 4 steps
    straight = fit(_model(), train, valid, cfg, tmp_path / "a", progress=False, load_best=False).model
    # Interrupted mid-epoch (step 6 of epochs of 4), then resumed in a fresh model object.
    fit(_model(), train, valid, cfg, tmp_path / "b", progress=False, stop_at_step=6)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 6
    resumed = fit(_model(), train, valid, cfg, tmp_path / "b", resume=True, progress=False, load_best=False)
    assert resumed.steps == 10
    for (name, a), b in zip(straight.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_time_budget_stops_gracefully(tmp_path):
    train, valid = _tiny_setup(length=4000)
    cfg = FitConfig(batch_size=2, time_budget=0.05)  # 3 s; epochs of 2000 steps
    result = fit(_model(), train, valid, cfg, tmp_path, progress=False)
    # Stopped by the clock, inside the first 2000-step epoch, not by the step count (speed varies by machine).
    assert 0 < result.steps < 2000 and result.train_seconds < 10
    assert (tmp_path / "last.pt").exists() and result.history[-1]["step"] == result.steps


def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup=10, total=110)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5) and s(110) == pytest.approx(0.0, abs=1e-12)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    train, valid = _tiny_setup()
    cfg = FitConfig(steps=4, batch_size=2, lr=1e-2, warmup=1)  # 16 samples / 2 ranks / 2 = 4 steps per epoch
    result = fit(_model(), train, valid, cfg, f"{out}/run", progress=False, load_best=False)
    torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    init = _model().state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], init[k]) for k in a)  # it trained


@pytest.mark.parametrize("name", ["cnn", "rescnn", "resunet", "unet", "vit"])
def test_models_start_at_the_identity(name):
    model = create_model(name)
    assert start_at_identity(model)
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(model.eval()(x), x)


def test_a_unet_without_its_global_residual_has_no_identity_start():
    assert not start_at_identity(create_model("unet", global_residual=False))


def test_retargeting_the_schedule_never_jumps():
    s = WarmupCosine(warmup=10, total=110)
    before = s(60)
    s.retarget(60, 1000)  # the machine got faster: more steps left, same learning rate now
    assert s(60) == pytest.approx(before) and s(61) < before and s(1000) == pytest.approx(0.0, abs=1e-12)
    s.retarget(500, 520)  # slower: the cosine finishes sooner, still from where it is
    assert s(520) == pytest.approx(0.0, abs=1e-12) and s(510) < s(500)


def test_a_stop_request_finishes_the_run_after_the_current_step(tmp_path, monkeypatch):
    import os
    import signal

    from recon.training import fit as fit_mod

    monkeypatch.setattr(fit_mod, "STOP_REQUESTED", fit_mod.threading.Event())
    signal.signal(signal.SIGUSR1, fit_mod.request_stop)  # what recon-train installs
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # a supervisor asking to finish now (scripts/train_gpu.py)
        train, valid = _tiny_setup(length=4000)
        result = fit(_model(), train, valid, FitConfig(batch_size=2, steps=2000), tmp_path, progress=False)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert result.steps == 1 and result.history[-1]["step"] == 1  # validated, best weights kept
    assert (tmp_path / "best.pt").exists()


def test_an_absent_cuda_device_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    train, valid = _tiny_setup()
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fit(_model(), train, valid, FitConfig(steps=1, batch_size=2, device="cuda"), tmp_path, progress=False)
