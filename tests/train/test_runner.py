"""One optimizer step over accumulated batches equals one on the whole batch; gradient clipping bounds the norm."""

import torch
from lightning_fabric import Fabric

from mala.config import MalaConfig
from mala.train.runner import StageRunner, optimizer_steps
from mala.train.trainer import grouped


class _OptimizeOnly(StageRunner):
    """The shared step alone: these tests give `optimize` their own module, loss and batches."""

    def epoch_dataset(self, epoch):
        raise AssertionError("not used by these tests")

    def accumulated_step(self, batches, progress_epochs):
        raise AssertionError("not used by these tests")


def _runner(accumulate: int = 1, clip_grad: float = 0.0) -> StageRunner:
    cfg = MalaConfig()
    cfg.run.accumulate, cfg.run.clip_grad = accumulate, clip_grad
    return _OptimizeOnly(cfg, Fabric(accelerator="cpu", devices=1), cache=None, settings=cfg.stage2)


def _mean_squared_error(module):
    def loss_of(batch):
        inputs, targets = batch
        loss = ((module(inputs) - targets) ** 2).mean()
        return loss, {"loss": loss.item()}
    return loss_of


def _gradient_after(batches, runner: StageRunner) -> torch.Tensor:
    torch.manual_seed(0)
    plain = torch.nn.Linear(3, 2)
    # lr 0: the step changes nothing, the gradients are compared
    module, optimizer = runner.fabric.setup(plain, torch.optim.SGD(plain.parameters(), lr=0.0))
    runner.optimize(module, optimizer, batches, _mean_squared_error(module))
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def test_accumulated_batches_give_the_gradient_of_the_whole_batch():
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(8, 3, generator=generator), torch.randn(8, 2, generator=generator)
    whole = _gradient_after([(inputs, targets)], _runner())
    halves = _gradient_after([(inputs[:4], targets[:4]), (inputs[4:], targets[4:])], _runner(accumulate=2))
    assert torch.allclose(whole, halves, atol=1e-6)


def test_clipping_bounds_the_gradient_norm():
    inputs, targets = torch.full((4, 3), 10.0), torch.zeros(4, 2)
    assert _gradient_after([(inputs, targets)], _runner()).norm() > 1.0
    assert _gradient_after([(inputs, targets)], _runner(clip_grad=0.5)).norm() <= 0.5 + 1e-6


def test_batches_group_into_optimizer_steps():
    assert [len(group) for group in grouped(range(7), 3)] == [3, 3, 1]
    assert optimizer_steps(7, 3) == 3 and optimizer_steps(6, 3) == 2
