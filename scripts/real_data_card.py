"""Evaluate weights on every evaluation set and record the numbers on their cards (and a Markdown table).

    python scripts/real_data_card.py resunet-ct cnn-ct resunet-deblur              # print only
    python scripts/real_data_card.py --write resunet-ct cnn-ct                    # and update weights/*.json
    python scripts/real_data_card.py --weights DIR --json out.json resunet-ct     # weights from DIR

Sets (recon.training.eval_sets): real-ct and real-mr at native size and at 256², anatomy-heldout at 256²
(skipped when anatomy/ has not been built). Each is what `recon-eval --model M --task T --set NAME
[--image-size 256]` prints; the card's `evaluations` list holds the set's source, size, split rule, licence,
the command and the per-slice numbers. The synthetic held-out numbers stay where training wrote them
(`metrics.heldout`, `recon-eval --model M --task T`). Cards are rewritten atomically; the safetensors file
and its sha256 are untouched.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

PLAN = [("real-ct", None), ("real-ct", 256), ("real-mr", None), ("real-mr", 256), ("anatomy-heldout", 256)]


def evaluate_name(name: str, weights: str | None, anatomy: str) -> list[dict]:
    from recon.training import eval_sets
    from recon.training.tasks import task_config_from_json
    from recon.training.weights import load_trained

    model_name, task = name.split("-", 1)
    model, card = load_trained(model_name, task, weights)
    trained = task_config_from_json(card["task"])
    # the synthetic held-out set: its numbers are the ones training wrote (`metrics.heldout`)
    command = shlex.join(["recon-eval", "--model", model_name, "--task", task])
    entries = [eval_sets.card_entry("heldout", trained.image_size, card["metrics"]["heldout"], command)]
    for set_name, size in PLAN:
        try:
            images = eval_sets.set_images(set_name, size, anatomy)
        except FileNotFoundError as missing:
            print(f"  skip {set_name}: {missing}")
            continue
        side = max(img.shape[0] for _, img in images)
        if model_name == "vit" and side > 512:  # attention: (side/8)⁴ floats per head, 4.3 GB at 1024²
            print(f"  skip {set_name} at {side}²: the ViT's attention matrix does not fit this machine")
            continue
        cfg = trained.with_overrides(image_size=size) if size else trained
        result = eval_sets.evaluate_slices(model, cfg, images)
        args = ["recon-eval", "--model", model_name, "--task", task, "--set", set_name]
        args += ["--image-size", str(size)] if size else []
        entries.append(eval_sets.card_entry(set_name, size, result, shlex.join(args)))
        g = result["gain_db"]
        base, net = result["baseline"]["psnr"], result["model"]["psnr"]
        print(
            f"  {set_name:16} {entries[-1]['size']:7} baseline {base:6.2f} dB  model {net:6.2f} dB  "
            f"gain mean {g['mean']:+.2f} min {g['min']:+.2f}"
        )
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="+", help="model-task names, e.g. resunet-ct")
    parser.add_argument("--weights", help="folder holding <name>.safetensors/.json [shipped weights/]")
    parser.add_argument("--anatomy", default="anatomy")
    parser.add_argument("--write", action="store_true", help="record the evaluations on the cards")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--markdown", help="write the README quality table (held-out and real side by side)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    import torch

    from recon.runtime.io.files import write_json_atomic
    from recon.training.weights import resolve

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.names:
        print(name)
        entries = evaluate_name(name, args.weights, args.anatomy)
        results[name] = entries
        if args.write:
            model_name, task = name.split("-", 1)
            _, card_path = resolve(model_name, task, args.weights)
            card = json.loads(card_path.read_text())
            card["evaluations"] = entries
            write_json_atomic(card_path, card)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(args.names, results, args.weights))


def markdown_table(names: list[str], results: dict, weights: str | None) -> str:
    """A row per checkpoint: the card's held-out gain, then each real set's mean (min) gain per slice."""
    from recon.training.weights import resolve

    columns = [(s, z) for s, z in PLAN]
    head = ["model", "held-out (synthetic, 256²)"] + [
        f"{s} {'native' if z is None else f'{z}²'}" for s, z in columns
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        card = json.loads(resolve(*name.split("-", 1), weights)[1].read_text())
        h = card["metrics"]["heldout"]
        cells = [name, f"{h['model']['psnr']:.2f} dB ({h['model']['psnr'] - h['baseline']['psnr']:+.2f})"]
        found = {(e["set"], e["size"]): e for e in results.get(name, [])}
        for set_name, size in columns:
            e = found.get((set_name, "native" if size is None else f"{size}²"))
            cells.append(
                f"{e['model']['psnr']:.2f} dB ({e['gain_db']['mean']:+.2f}, min {e['gain_db']['min']:+.2f})"
                if e
                else "–"
            )
        rows.append("| " + " | ".join(cells) + " |")
    note = (
        "\nPSNR of the network (in brackets: mean gain over the baseline, FBP or the blurred image, and the "
        "smallest gain of one slice). Commands: `recon-eval --model M --task T` (held-out) and "
        "`recon-eval --model M --task T --set NAME [--image-size 256]`; all rows: "
        f"`python scripts/real_data_card.py {' '.join(names)}`.\n"
    )
    return "\n".join(rows) + "\n" + note


if __name__ == "__main__":
    main()
