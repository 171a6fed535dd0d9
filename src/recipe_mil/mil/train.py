"""Training plan and inference for :class:`~recipe_mil.mil.model.GatedAttentionMIL`.

Training draws class-balanced epochs of bags, optionally subsamples large bags, and
early-stops on the balanced accuracy (then the loss) of real validation bags. Inference
keeps every instance and returns class probabilities and per-bag attention.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from recipe_mil.config import TrainConfig
from recipe_mil.device import resolve_device
from recipe_mil.mil.data import BagCollection, balanced_epoch, collate, features_on
from recipe_mil.mil.model import GatedAttentionMIL

# Tolerance under which two balanced accuracies count as equal (they are ratios of counts).
_BACC_TIE = 1e-9


@dataclass
class FitResult:
    """Outcome of :func:`fit_mil`.

    Attributes
    ----------
    model
        The trained model (best validation state, or the last state without validation),
        in eval mode, on the training device.
    history
        One dict per epoch with keys ``epoch`` (1-based), ``train_loss``, ``val_loss`` and
        ``val_balanced_accuracy`` (the last two None without validation bags).
    best_epoch
        The 1-based epoch whose state ``model`` holds.
    """

    model: GatedAttentionMIL
    history: list[dict[str, float | int | None]] = field(default_factory=list)
    best_epoch: int = 0


def _on_device(bags: BagCollection, device: torch.device) -> torch.Tensor | None:
    """Copy the feature matrix to a GPU once for the whole loop (None on CPU or for a row store: no copy)."""
    return features_on(bags.features, device)


def _infer(
    model: GatedAttentionMIL, bags: BagCollection, *, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Return logits (on CPU, bag order) and per-bag attention with every instance, without grad."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(bags)
    logits = torch.zeros((n, model.n_classes), dtype=torch.float32)
    attention: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * n
    order = np.argsort(bags.bag_sizes, kind="stable")  # similar sizes together: less padding
    source = _on_device(bags, device)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            ids = order[start : start + batch_size]
            x, mask, _, _ = collate(bags, ids, source=source)
            out, att = model(x.to(device), mask.to(device))
            logits[torch.from_numpy(ids)] = out.float().cpu()
            att_np = att.float().cpu().numpy()
            for j, i in enumerate(ids):
                attention[i] = att_np[j, : bags.bag_indices[i].shape[0]].copy()
    return logits, attention


def _validate(
    model: GatedAttentionMIL, bags: BagCollection, *, batch_size: int, device: torch.device
) -> tuple[float, float]:
    """Return the validation cross-entropy (hard labels) and balanced accuracy, in eval mode."""
    model.eval()
    logits, _ = _infer(model, bags, batch_size=batch_size, device=device)
    labels = torch.from_numpy(bags.labels)
    loss = float(F.cross_entropy(logits, labels).item())
    pred = logits.argmax(dim=1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predicted classes absent from the labels
        bacc = float(balanced_accuracy_score(bags.labels, pred))
    return loss, bacc


class EarlyStopping:
    """Early stopping on real validation bags: keeps the best state and says when to stop.

    The kept state is the one with the highest balanced accuracy, ties (within
    ``1e-9``) broken by the lower loss. An epoch counts as progress when it improves the kept
    score or the lowest validation loss so far; training stops after ``patience`` epochs
    without progress, never before ``min_epochs``.

    Parameters
    ----------
    patience
        Epochs without progress before stopping.
    min_epochs
        Never stop before this epoch.

    Attributes
    ----------
    best_key
        ``(balanced accuracy, loss)`` of the kept state.
    best_epoch
        The 1-based epoch of the kept state (0 before the first update).
    best_state
        A copy of the model's ``state_dict`` at ``best_epoch`` (None before the first update).
    """

    def __init__(self, patience: int, min_epochs: int) -> None:
        self.patience = patience
        self.min_epochs = min_epochs
        self.best_key = (-math.inf, math.inf)
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.lowest_loss = math.inf
        self.stale = 0

    def update(self, epoch: int, val_loss: float, val_bacc: float, model: torch.nn.Module) -> bool:
        """Record one epoch's validation scores; return whether its state is now the kept one."""
        best_bacc, best_loss = self.best_key
        improved = val_bacc > best_bacc + _BACC_TIE or (abs(val_bacc - best_bacc) <= _BACC_TIE and val_loss < best_loss)
        if improved or val_loss < self.lowest_loss:
            self.stale = -1
        self.lowest_loss = min(self.lowest_loss, val_loss)
        if improved:
            self.best_key = (val_bacc, val_loss)
            self.best_epoch = epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.stale += 1
        return improved

    def should_stop(self, epoch: int) -> bool:
        """Whether to stop after ``epoch`` (no progress for ``patience`` epochs, ``min_epochs`` reached)."""
        return self.stale >= self.patience and epoch >= self.min_epochs


def train_epoch(
    model: GatedAttentionMIL,
    optimiser: torch.optim.Optimizer,
    train: BagCollection,
    config: TrainConfig,
    *,
    rng: np.random.Generator,
    device: torch.device,
    source: torch.Tensor | None = None,
) -> float:
    """Run one epoch of training and return its mean loss per bag.

    Draws ``len(train)`` bags with class-balanced sampling (with replacement) and runs
    ``ceil(len(train) / batch_size)`` AdamW steps on the cross-entropy, against
    ``train.soft_targets`` when present and the hard labels otherwise; bags are subsampled
    to ``config.max_instances``. ``rng`` drives the sampling and subsampling; torch's global
    generator the dropout.

    Parameters
    ----------
    model, optimiser
        The model (put in train mode) and its optimiser.
    train
        Training bags.
    config
        Hyperparameters (``batch_size``, ``max_instances``).
    rng
        The training's numpy generator.
    device
        Where the model lives.
    source
        ``train.features`` already on ``device`` (GPU), or None.
    """
    model.train()
    ids = balanced_epoch(train.labels, len(train), rng)
    total, seen = 0.0, 0
    for b in range(math.ceil(len(train) / config.batch_size)):
        batch = ids[b * config.batch_size : (b + 1) * config.batch_size]
        x, mask, y, soft = collate(train, batch, max_instances=config.max_instances, rng=rng, source=source)
        logits, _ = model(x.to(device), mask.to(device))
        target = soft.to(device) if soft is not None else y.to(device)
        loss = F.cross_entropy(logits, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.item()) * batch.shape[0]
        seen += batch.shape[0]
    return total / seen


def _check_fit_inputs(
    train: BagCollection, val: BagCollection | None, n_classes: int, config: TrainConfig
) -> BagCollection | None:
    """Refuse inconsistent inputs; return ``val``, or None when it has no bags."""
    if len(train) == 0:
        raise ValueError("no training bags")
    if config.batch_size < 1 or config.epochs < 1 or config.patience < 1:
        raise ValueError("batch_size, epochs and patience must be positive")
    for name, bags in (("train", train), ("val", val)):
        if bags is not None and len(bags) and int(bags.labels.max()) >= n_classes:
            raise ValueError(f"{name} has label {int(bags.labels.max())} but n_classes={n_classes}")
        if bags is not None and bags.dim != train.dim:
            raise ValueError(f"{name} has feature dimension {bags.dim}, train has {train.dim}")
    if train.soft_targets is not None and train.soft_targets.shape[1] != n_classes:
        raise ValueError(f"soft targets have {train.soft_targets.shape[1]} classes, expected {n_classes}")
    return None if val is not None and len(val) == 0 else val


def fit_mil(
    train: BagCollection,
    val: BagCollection | None,
    n_classes: int,
    config: TrainConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train a gated attention MIL model.

    Each epoch is one :func:`train_epoch`. After each epoch the validation bags are scored
    with every instance in eval mode and an :class:`EarlyStopping` tracker keeps the best
    state (higher balanced accuracy, then lower loss) and stops training after ``patience``
    epochs without improvement; the best state is restored. Without validation bags every
    epoch runs and the last state is kept.

    On CPU the result is a deterministic function of the inputs and ``config.seed``; the
    global torch random state of the caller is left untouched.

    Parameters
    ----------
    train
        Training bags.
    val
        Validation bags (real patients), or None.
    n_classes
        Number of classes.
    config
        Hyperparameters.
    log
        Called with one progress line per epoch.

    Returns
    -------
    FitResult
        The trained model, the per-epoch history and the epoch of the kept state.
    """
    val = _check_fit_inputs(train, val, n_classes, config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    say = log if log is not None else (lambda _line: None)

    fork_devices: list[int] = []  # CUDA generators to save and restore besides the CPU one
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    history: list[dict[str, float | int | None]] = []
    stopper = EarlyStopping(config.patience, config.min_epochs)
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = GatedAttentionMIL(
            train.dim,
            n_classes,
            hidden=config.hidden,
            attention_dim=config.attention_dim,
            dropout=config.dropout,
        ).to(device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        source = _on_device(train, device)  # one copy per training, batches gathered on the device
        for epoch in range(1, config.epochs + 1):
            train_loss = train_epoch(model, optimiser, train, config, rng=rng, device=device, source=source)
            if val is None:
                history.append(
                    {"epoch": epoch, "train_loss": train_loss, "val_loss": None, "val_balanced_accuracy": None}
                )
                say(f"epoch {epoch}/{config.epochs} train_loss={train_loss:.4f}")
                continue
            val_loss, val_bacc = _validate(model, val, batch_size=max(config.batch_size, 16), device=device)
            history.append(
                {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_balanced_accuracy": val_bacc}
            )
            improved = stopper.update(epoch, val_loss, val_bacc, model)
            say(
                f"epoch {epoch}/{config.epochs} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                f"val_balanced_accuracy={val_bacc:.4f}{' (best)' if improved else ''}"
            )
            if stopper.should_stop(epoch):
                say(f"early stop after epoch {epoch}: no improvement for {config.patience} epochs")
                break

    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
        bacc, loss = stopper.best_key
        say(f"restored epoch {stopper.best_epoch} (val_balanced_accuracy={bacc:.4f}, val_loss={loss:.4f})")
    model.eval()
    best_epoch = stopper.best_epoch if val is not None else len(history)
    return FitResult(model=model, history=history, best_epoch=best_epoch)


def predict(
    model: GatedAttentionMIL,
    bags: BagCollection,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities and attention of every bag, with every instance.

    The model is moved to ``device`` and left in eval mode; nothing is subsampled and no
    gradient is recorded. A bag's result does not depend on the other bags of its batch.

    Parameters
    ----------
    model
        A trained model.
    bags
        The bags to score.
    batch_size
        Bags per forward pass.
    device
        Device name (``"auto"`` allowed) or :class:`torch.device`.

    Returns
    -------
    probs
        Float32 array of shape (n_bags, n_classes).
    attention
        Per bag, a float32 array of its instances' attention in the bag's instance order.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(dev)
    model.eval()
    logits, attention = _infer(model, bags, batch_size=batch_size, device=dev)
    probs = torch.softmax(logits, dim=1).numpy()
    return probs, attention
