"""
Lesson: a model too large for its data. The train loss keeps falling, the val loss turns up; early stopping
keeps the best checkpoint.

    uv run python -m lessons.overfitting                 # the 10M vanilla preset on the first 20,000 characters
    uv run python -m lessons.overfitting --chars 50000   # more data: the turn comes later and lower

Tiny Shakespeare's first CHARS characters are written to a file and train.py trains on it (its own 90/10
split: the last tenth validates) with no dropout and --patience, so the run stops a few evaluations after
the val loss stops improving. best.pt is the checkpoint from the best evaluation: that is the early stop.
The plot shows both curves; the printout says where they part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run lessons/overfitting.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
from experiments import common  # noqa: E402
from lessons import write_plot, write_result  # noqa: E402
from machinery.checkpoint import load_checkpoint  # noqa: E402
from machinery.files import write_atomically  # noqa: E402

# The 10M vanilla preset with no dropout, so nothing holds back memorisation, 16 × 128 tokens a step.
TOO_LARGE = ["--preset", "vanilla", "--dropout", "0", "--block-size", "128", "--batch-size", "16", "--lr", "1e-3",
             "--min-lr", "1e-4", "--warmup-iters", "20", "--eval-interval", "25", "--eval-windows", "0"]


def write_slice(corpus: Path, chars: int, out_dir: Path) -> Path:
    """The first `chars` characters of the corpus, as a text file train.py can read."""
    text = data.read_text(corpus)
    if chars > len(text):
        raise SystemExit(f"error: --chars {chars} is more than the corpus has ({len(text)})")
    path = out_dir / f"first_{chars}_chars.txt"
    write_atomically(path, text[:chars].encode("utf-8"))
    return path


def turning_point(records: list[dict]) -> dict:
    """Where val loss was lowest, what it and the train loss did after, and whether val turned up."""
    best = min(records, key=lambda record: record["val_loss"])
    last = records[-1]
    train_at_best = next((r["train_loss"] for r in records if r["step"] == best["step"]), None)
    return {"best_step": best["step"], "best_val_loss": best["val_loss"], "last_step": last["step"],
            "last_val_loss": last["val_loss"], "train_loss_at_best": train_at_best,
            "last_train_loss": last["train_loss"], "val_turned_up": last["val_loss"] > best["val_loss"],
            "train_kept_falling": train_at_best is not None and last["train_loss"] < train_at_best}


def loss_text(loss: float | None) -> str:
    """A loss to 4 decimals, or a dash where the run logged none (no train loss at that evaluation)."""
    return "—" if loss is None else f"{loss:.4f}"


def report_lines(result: dict) -> list[str]:
    point = result["turning_point"]
    train_at_best = loss_text(point["train_loss_at_best"])
    return [f"{result['params']:,} parameters trained on the first {result['chars']:,} characters of Tiny "
            f"Shakespeare ({result['train_chars']:,} to train on, the rest to validate), no dropout, "
            f"--patience {result['patience']}:", "",
            "| | step | train loss | val loss |", "|---|---|---|---|",
            f"| best evaluation (kept in best.pt) | {point['best_step']} | {train_at_best} | "
            f"{point['best_val_loss']:.4f} |",
            f"| last evaluation (early stop) | {point['last_step']} | {point['last_train_loss']:.4f} | "
            f"{point['last_val_loss']:.4f} |", "",
            f"best.pt holds step {result['best_checkpoint_step']}.", "",
            f"![train and val loss of the overfitting run](plots/{result['name']}.png)", "",
            f"The run: `{result['command']}`"]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Overfit a model too large for its data; stop early.")
    parser.add_argument("--chars", type=int, default=20_000, help="characters of the corpus to use (default: 20,000)")
    parser.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
    parser.add_argument("--max-iters", type=int, default=600, help="the most steps to train (default: 600)")
    parser.add_argument("--device", default="auto", help="passed to train.py")
    parser.add_argument("--data", help="the corpus to take the slice from (default: Tiny Shakespeare)")
    parser.add_argument("--train-args", default="", help="more train.py flags, after the lesson's own")
    parser.add_argument("--runs-dir", type=Path, default=common.ROOT / "out" / "lessons" / "overfitting",
                        help="where the slice, checkpoints and metrics go (default: out/lessons/overfitting)")
    parser.add_argument("--results-dir", type=Path, help="also write lesson_overfitting.json here")
    parser.add_argument("--docs-dir", type=Path, default=common.DOCS_DIR, help="where plots/ goes (default: docs)")
    args = parser.parse_args(argv)
    corpus = write_slice(data.find_corpus(args.data), args.chars, args.runs_dir)
    flags = [*TOO_LARGE, "--data", common.display_path(corpus), "--device", args.device, "--max-iters",
             str(args.max_iters), "--patience", str(args.patience), *args.train_args.split()]
    run = common.train_run(flags, args.runs_dir / "run", rerun=True)
    point = turning_point(run["metrics"])
    best_step = load_checkpoint(Path(common.ROOT, run["out_dir"]) / "best.pt")["step"]
    print(f"val loss was lowest at step {point['best_step']} ({point['best_val_loss']:.4f}); by step "
          f"{point['last_step']} it rose to {point['last_val_loss']:.4f} while the train loss fell from "
          f"{loss_text(point['train_loss_at_best'])} to {point['last_train_loss']:.4f}. "
          f"best.pt holds step {best_step}.")
    result = {"name": "lesson_overfitting", "kind": "lesson", "title": "a model too large for its data",
              "chars": args.chars, "train_chars": len(data.split_text(data.read_text(corpus))[0]),
              "params": run["params"], "patience": args.patience, "command": run["command"],
              "turning_point": point, "best_checkpoint_step": best_step, "metrics": run["metrics"]}
    result["report"] = report_lines(result)

    def draw(path: Path) -> None:
        from machinery.plots import plot_training_curves

        plot_training_curves(run["metrics"], path)

    write_plot(result["name"], args.docs_dir, draw)
    if args.results_dir:
        write_result(result, "overfitting", argv, args.device, args.data, args.results_dir)
    return result


if __name__ == "__main__":
    main()
