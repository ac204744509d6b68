"""`recon-info`: the numbers for the course's SimpleCNN, JSON output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from recon.training.info import main

CNN_FLOPS_256 = 2 * 256 * 256 * 9 * (64 + 64 * 64 + 64)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_cnn_report_shows_parameters_receptive_field_and_flops():
    result = run("cnn")
    assert result.exit_code == 0, result.output
    assert "38,145" in result.output
    assert "receptive field  7 px" in result.output
    assert "4.98 GFLOP at 256x256" in result.output


def test_cnn_json_report_is_plain_data():
    result = run("cnn", "--json", "--size", "128,64")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["parameters"] == 38145
    assert report["receptive_field"] == 7
    assert report["size"] == [128, 64]
    assert report["flops"] == CNN_FLOPS_256 * (128 * 64) // (256 * 256)
    assert report["config"]["name"] == "cnn"


def test_presets_and_overrides_reach_the_model():
    report = json.loads(run("resunet", "--preset", "paper", "--json").output)
    assert report["config"]["c0"] == 64 and 55e6 < report["parameters"] < 57e6
    report = json.loads(run("resunet", "--set", "attention=true", "--set", "c0=8", "--json").output)
    assert report["config"]["attention"] is True and report["config"]["c0"] == 8


def test_vit_reports_a_global_receptive_field():
    report = json.loads(run("vit", "--json").output)
    assert report["receptive_field"] is None
    assert report["parameters"] == 1_249_089


def test_layer_table_ends_at_the_reported_receptive_field():
    result = run("resunet", "--layers")
    assert result.exit_code == 0, result.output
    assert "receptive field  309 px" in result.output
    assert result.output.rstrip().splitlines()[-1].split()[-1] == "r=309"


def test_without_a_model_it_lists_the_models_and_presets():
    result = run()
    assert result.exit_code == 0
    for name in ("cnn", "rescnn", "resunet", "vit", "small, paper"):
        assert name in result.output


def test_unknown_model_is_one_clear_line_listing_the_available_ones():
    result = run("nonet")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines == ["error: unknown model 'nonet'; available: cnn, rescnn, resunet, unet, vit"]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_hyperparameter_is_one_clear_line():
    result = run("resunet", "--set", "c0=0")
    assert result.exit_code != 0
    assert result.output.strip() == "error: c0 must be a positive integer, got 0"


def test_help_has_examples():
    result = run("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "recon-info cnn" in result.output


def test_a_user_error_exits_non_zero_without_a_traceback_in_a_real_process():
    command = [sys.executable, "-m", "recon.training.info", "nonet"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: unknown model 'nonet'; available: cnn, rescnn, resunet, unet, vit"


def test_recon_info_is_the_same_command_under_the_recon_group():
    # `recon info` loads recon-info only when asked (recon.runtime.cli.main must stay torch-free)
    bin_dir = f"{sys.prefix}/bin"
    result = subprocess.run(
        [f"{bin_dir}/recon", "info", "cnn", "--json", "--size", "128,64"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(run("cnn", "--json", "--size", "128,64").output)
    wrong = subprocess.run([f"{bin_dir}/recon", "info", "nosuch"], capture_output=True, text=True)
    assert wrong.returncode != 0 and "unknown model 'nosuch'" in wrong.stderr
