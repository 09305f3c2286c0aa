"""A run's logs: log.csv (a row per epoch), steps.csv (a row per optimizer step), TensorBoard events in
tensorboard/ when the package is installed, and loss.png (the loss curves) at the end of each stage."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path
from typing import Callable

PARTS = ["loss", "l1", "ssim", "adv", "disc", "focal", "lr"]
EPOCH_FIELDS = ["stage", "epoch", "img_per_s", *PARTS]
STEP_FIELDS = ["stage", "epoch", "step", "run_step", "img_per_s", *PARTS]
TENSORBOARD_DIR = "tensorboard"


def tensorboard_note() -> str | None:
    """The line a run says when it cannot write TensorBoard events (the package is missing); None when it can."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        return "tensorboard is not installed (pip install 'mala[tensorboard]'); logging to CSV only"
    return None


def _tensorboard_writer(log_dir: Path, purge_step: int):
    """A SummaryWriter, or None with `tensorboard_note` on stderr when the `tensorboard` package is missing."""
    note = tensorboard_note()
    if note is not None:
        print(f"mala: {note}", file=sys.stderr)
        return None
    from torch.utils.tensorboard import SummaryWriter

    # purge_step: a resumed run drops the events written after its checkpoint
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step or None)


def keep_rows(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite a CSV log without the rows `keep` rejects (those a resumed run is about to write again)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], [row for row in reader if keep(row)]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _append(path: Path, fields: list[str], row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


class RunLogger:
    """Writes on rank 0 only (`enabled`); other ranks get a logger that does nothing."""

    def __init__(self, run_dir: Path, enabled: bool, resume_from=None):
        """`resume_from`: the TrainingPosition of the checkpoint a resumed run starts from; later rows are dropped."""
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.writer = None
        if not enabled:
            return
        if resume_from is not None:
            done = (resume_from.stage, resume_from.epoch)
            keep_rows(self.run_dir / "log.csv", lambda row: (int(row["stage"]), int(row["epoch"])) <= done)
            keep_rows(self.run_dir / "steps.csv", lambda row: int(row["run_step"]) <= resume_from.run_step)
        self.writer = _tensorboard_writer(self.run_dir / TENSORBOARD_DIR,
                                          resume_from.run_step + 1 if resume_from else 0)

    def step(self, row: dict) -> None:
        if not self.enabled:
            return
        _append(self.run_dir / "steps.csv", STEP_FIELDS, row)
        if self.writer is not None:
            for key in ["img_per_s", *PARTS]:
                if key in row:
                    self.writer.add_scalar(f"stage{row['stage']}/{key}", row[key], row["run_step"])

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        _append(self.run_dir / "log.csv", EPOCH_FIELDS, row)
        if self.writer is not None:
            self.writer.flush()  # so TensorBoard shows the run while it trains

    def stage_done(self) -> None:
        if self.enabled:
            plot_losses(self.run_dir / "steps.csv", self.run_dir / "loss.png")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_losses(steps_csv: Path, out: Path) -> None:
    """The loss and its parts against the optimizer step, one panel per stage (log scale: the parts differ by
    orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with steps_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    stages = sorted({row["stage"] for row in rows})
    figure, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for axis, stage in zip(axes[0], stages):
        mine = [row for row in rows if row["stage"] == stage]
        for key in [k for k in PARTS if k != "lr" and any(row.get(k) for row in mine)]:
            points = [(int(row["run_step"]), float(row[key])) for row in mine if row.get(key)]
            axis.plot(*zip(*points), label=key, linewidth=1)
        axis.set(title=f"stage {stage}", xlabel="optimizer step", yscale="log")
        axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
