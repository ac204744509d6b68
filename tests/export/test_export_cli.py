"""recon-export as a user meets it: one-line errors, --json, --engine auto/trt, parity gate, Triton."""

from __future__ import annotations

import json

import pytest

from recon.export.cli import main
from recon.export.tensorrt_build import tensorrt_builder_status

SMALL = ["--size", "32", "--batch", "1:2:4", "--threads", "1", "--quiet"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_has_examples(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "Examples:" in out and "recon-export --model resunet --fp16" in out and "--engine" in out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "nosuchnet", "--random-init"], ["unknown model 'nosuchnet'", "resunet"]),
        (["--model", "cnn", "--random-init", "--batch", "8"], ["MIN:OPT:MAX"]),
        (["--model", "cnn", "--random-init", "--batch", "4:2:8"], ["1 ≤ MIN ≤ OPT ≤ MAX"]),
        (["--model", "cnn", "--random-init", "--task", "xray"], ["'xray'"]),
        (["--model", "cnn", "--random-init", "--angles", "30"], ["--task ct only"]),
        (["--model", "cnn", "--random-init", "--task-option", "colour=3"], ["colour"]),
        (["--model", "cnn", "--weights", "/nonexistent/cnn-deblur.safetensors"], ["no given weights card"]),
    ],
)
def test_user_mistakes_are_one_line_errors(capsys, tmp_path, args, fragments):
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "art"), "--engine", "none", "--quiet")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "art").exists()


def test_missing_shipped_weights_fail_clearly_unless_random_init(capsys, tmp_path, monkeypatch):
    import recon.weights

    monkeypatch.setattr(recon.weights, "WEIGHTS_DIR", tmp_path / "no-weights-here")
    code, _, err = run(capsys, "--model", "cnn", "--task", "ct", "--out", str(tmp_path / "art"), "--quiet")
    assert_one_line_error(code, err, "no shipped weights for cnn-ct", "--weights", "--random-init")


@pytest.mark.skipif(tensorrt_builder_status()[0] is not None, reason="TensorRT and a GPU are present here")
def test_engine_trt_without_tensorrt_or_gpu_exits_non_zero_with_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "--model", "cnn", "--random-init", "--fp16", "--engine", "trt",
                       "--out", str(tmp_path / "art"), *SMALL)  # fmt: skip
    assert_one_line_error(code, err, "--engine trt", "cannot build a TensorRT engine")
    assert not (tmp_path / "art").exists()


def test_engine_auto_exports_without_an_engine_and_says_why_in_json(capsys, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    art, repo = tmp_path / "art", tmp_path / "triton"
    code, out, err = run(capsys, "--model", "cnn", "--random-init", "--fp16", "--out", str(art),
                         "--triton-repo", str(repo), "--json", *SMALL)  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)  # stdout holds only the JSON
    assert summary["artifact"] == str(art.resolve()) or summary["artifact"] == str(art.absolute())
    assert summary["parity"]["passed"]
    has_builder = tensorrt_builder_status()[0] is not None
    assert ("model.plan" in summary["files"]) == has_builder
    if not has_builder:
        # why not is data; a note (printed) only where a GPU is visible, not on every CPU export
        assert summary["engine"]["built"] is False and summary["engine"]["reason"]
        assert "--backend cpu" not in summary["engine"]["reason"]  # an option recon-export does not have
        assert not any(note.startswith("no TensorRT engine") for note in summary["notes"])

    config = text_format.Parse(
        (repo / "cnn-deblur" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    assert (repo / "cnn-deblur" / "1" / "model.onnx").read_bytes() == (art / "model.fp16.onnx").read_bytes()

    # A second run on the same target needs --force.
    code, _, err = run(
        capsys, "--model", "cnn", "--random-init", "--out", str(art), "--engine", "none", *SMALL
    )
    assert_one_line_error(code, err, "already exists", "--force")


def test_failed_parity_writes_nothing_unless_allowed(capsys, tmp_path):
    art = tmp_path / "art"
    strict = [
        "--model",
        "cnn",
        "--random-init",
        "--fp16",
        "--fp16-min-psnr",
        "1000",
        "--engine",
        "none",
        *SMALL,
    ]
    code, _, err = run(capsys, *strict, "--out", str(art))
    assert_one_line_error(code, err, "parity failed", "onnxruntime-fp16", "< 1000 dB")
    assert not art.exists() and list(tmp_path.iterdir()) == []

    code, out, err = run(capsys, *strict, "--out", str(art), "--allow-mismatch", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["parity"]["passed"] is False and summary["parity"]["onnxruntime-fp32"]["passed"] is True
    assert any("--allow-mismatch" in note for note in summary["notes"])
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["parity"]["passed"] is False


def test_add_puts_a_variant_beside_what_the_artifact_holds_and_refuses_other_weights(capsys, tmp_path):
    art = tmp_path / "art"
    tiny = ["--image-size", "32", "--batch", "1:2:4", "--threads", "1", "--quiet", "--out", str(art)]
    code, _, err = run(capsys, "--model", "cnn", "--fp16", "--consistency-images", "16", *tiny)
    assert code == 0, err
    before = json.loads((art / "manifest.json").read_text())
    code, out, err = run(capsys, "--model", "cnn", "--int8", "--add", "--json", *tiny)
    assert code == 0, err
    summary = json.loads(out)
    after = json.loads((art / "manifest.json").read_text())
    assert {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "consistency.onnx"} <= set(after["files"])
    assert summary["parity"]["onnxruntime-fp16"]["passed"] and summary["parity"]["onnxruntime-int8"]["passed"]
    assert after["consistency"]["calibration"]["n"] == before["consistency"]["calibration"]["n"] == 16
    assert after["model"]["weights_sha256"] == before["model"]["weights_sha256"] == summary["weights_sha256"]
    assert summary["weights_path"].endswith("cnn-deblur.safetensors")
    assert not list(tmp_path.glob(".*tmp*")), "no temp folder left beside the artifact"

    # another network into the same artifact: refused, the artifact untouched
    code, _, err = run(capsys, "--model", "cnn", "--random-init", "--bf16", "--add", *tiny)
    assert_one_line_error(code, err, "--add", "weights")
    assert json.loads((art / "manifest.json").read_text()) == after
    code, _, err = run(capsys, "--model", "cnn", "--int8", "--add", *tiny[:-1], str(tmp_path / "none"))
    assert_one_line_error(code, err, "--add", "not an artifact")
