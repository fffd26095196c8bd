"""Losses with mmdet 2.x reduction semantics.

Every loss module is called as ``loss(pred, target, weight=None, avg_factor=None,
reduction_override=None)``:

- ``weight`` multiplies the element-wise loss (broadcast from the leading dimensions);
- ``reduction='mean'`` divides the (weighted) sum by the number of elements, or by ``avg_factor``
  when given; ``'sum'`` sums (``avg_factor`` with ``'sum'`` is an error); ``'none'`` returns the
  element-wise loss;
- the result is multiplied by ``loss_weight``.

Example (``weighted_loss`` semantics):
    >>> pred, target = torch.tensor([0., 2., 3.]), torch.tensor([1., 1., 1.])
    >>> weight_reduce_loss((pred - target).abs(), torch.tensor([1., 0., 1.]), avg_factor=2)
    tensor(1.5000)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.registry import LOSSES
from detcli.structures import box_overlaps

REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r} (allowed: {', '.join(REDUCTIONS)})")
    return reduction


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduce an element-wise loss with ``'none'``, ``'mean'`` or ``'sum'``."""
    _check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def weight_reduce_loss(loss: Tensor, weight: Tensor | None = None, reduction: str = "mean",
                       avg_factor: float | Tensor | None = None) -> Tensor:
    """Multiply by ``weight`` then reduce; with ``avg_factor``, ``'mean'`` is ``sum / avg_factor``.

    Raises:
        ValueError: ``avg_factor`` combined with ``reduction='sum'``.
    """
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == "mean":
        return loss.sum() / avg_factor
    if reduction == "none":
        return loss
    raise ValueError("avg_factor can not be used with reduction='sum'")


def weighted_loss(loss_func: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Turn an element-wise ``loss_func(pred, target, **kw)`` into ``f(pred, target, weight=None,
    reduction='mean', avg_factor=None, **kw)`` with :func:`weight_reduce_loss` semantics."""

    def wrapper(pred: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean",
                avg_factor: float | Tensor | None = None, **kwargs: float) -> Tensor:
        return weight_reduce_loss(loss_func(pred, target, **kwargs), weight, reduction, avg_factor)

    wrapper.__name__ = loss_func.__name__
    wrapper.__doc__ = loss_func.__doc__
    return wrapper


@weighted_loss
def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise ``|pred - target|``."""
    return (pred - target).abs()


@weighted_loss
def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Element-wise ``0.5 * d ** 2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 * beta``."""
    diff = (pred - target).abs()
    if beta <= 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def _maybe_empty_weighted(pred: Tensor, weight: Tensor | None) -> Tensor | None:
    """mmdet: when every weight is 0, return a zero that keeps a gradient path to ``pred``."""
    if weight is not None and weight.numel() > 0 and not bool((weight > 0).any()):
        w = weight if weight.dim() == pred.dim() else weight[..., None]
        return (pred * w).sum()
    return None


class _ReducedLoss(nn.Module):
    """Shared ``reduction`` / ``loss_weight`` handling of the loss modules."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.loss_weight = float(loss_weight)

    def _reduction(self, reduction_override: str | None) -> str:
        return _check_reduction(reduction_override) if reduction_override is not None else self.reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"


@LOSSES.register()
class L1Loss(_ReducedLoss):
    """``|pred - target|``.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result.
    """

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """pred, target (Tensor[N, 4]); weight (Tensor[N, 4] or broadcastable)."""
        return self.loss_weight * l1_loss(pred, target, weight, self._reduction(reduction_override), avg_factor)


@LOSSES.register()
class SmoothL1Loss(_ReducedLoss):
    """Huber-like loss: quadratic below ``beta``, linear above.

    Args:
        beta: the transition point (``<= 0`` gives L1).
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result.
    """

    def __init__(self, beta: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.beta = float(beta)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        return self.loss_weight * smooth_l1_loss(
            pred, target, weight, self._reduction(reduction_override), avg_factor, beta=self.beta)


def _aligned_box_loss(per_box: Callable[[Tensor, Tensor], Tensor], pred: Tensor, target: Tensor,
                      weight: Tensor | None, avg_factor: float | Tensor | None, reduction: str,
                      loss_weight: float) -> Tensor:
    """Shared body of the IoU-family losses: empty/zero-weight shortcut, per-box weights, reduction."""
    zero = _maybe_empty_weighted(pred, weight) if reduction != "none" else None
    if zero is not None:
        return zero
    if weight is not None and weight.dim() > 1:
        weight = weight.mean(-1)
    return loss_weight * weight_reduce_loss(per_box(pred, target), weight, reduction, avg_factor)


@LOSSES.register()
class IoULoss(_ReducedLoss):
    """IoU loss of aligned boxes: ``-log(IoU)`` (``mode='log'``), ``1 - IoU`` (``'linear'``) or ``1 - IoU**2``.

    Args:
        linear: deprecated spelling of ``mode='linear'``.
        eps: lower bound of the IoU.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result.
        mode: ``'log'``, ``'linear'`` or ``'square'``.
    """

    MODES = ("log", "linear", "square")

    def __init__(self, linear: bool = False, eps: float = 1e-6, reduction: str = "mean",
                 loss_weight: float = 1.0, mode: str = "log") -> None:
        super().__init__(reduction, loss_weight)
        if mode not in self.MODES:
            raise ValueError(f"unknown IoULoss mode {mode!r} (allowed: {', '.join(self.MODES)})")
        self.mode = "linear" if linear else mode
        self.eps = float(eps)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """pred, target (Tensor[N, 4]) (x1, y1, x2, y2); weight (Tensor[N] or Tensor[N, 4])."""
        def per_box(pred: Tensor, target: Tensor) -> Tensor:
            ious = box_overlaps(pred, target, is_aligned=True).clamp(min=self.eps)  # (N,)
            if self.mode == "linear":
                return 1 - ious
            if self.mode == "square":
                return 1 - ious * ious
            return -ious.log()

        return _aligned_box_loss(per_box, pred, target, weight, avg_factor, self._reduction(reduction_override),
                                 self.loss_weight)


@LOSSES.register()
class GIoULoss(_ReducedLoss):
    """Generalised IoU loss ``1 - GIoU`` of aligned boxes.

    Args:
        eps: lower bound of the union and enclosing areas.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result.
    """

    def __init__(self, eps: float = 1e-6, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.eps = float(eps)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """pred, target (Tensor[N, 4]) (x1, y1, x2, y2); weight (Tensor[N] or Tensor[N, 4])."""
        def per_box(pred: Tensor, target: Tensor) -> Tensor:
            return 1 - box_overlaps(pred, target, mode="giou", is_aligned=True, eps=self.eps)  # (N,)

        return _aligned_box_loss(per_box, pred, target, weight, avg_factor, self._reduction(reduction_override),
                                 self.loss_weight)


class _SigmoidFocalSum(torch.autograd.Function):
    """Sum of the weighted sigmoid focal loss with a hand-written backward.

    Most of the ``M x C`` entries are negatives, so the negative term is computed on the whole
    matrix and the few positive entries are patched, which avoids building a one-hot target and
    halves the passes over memory compared with autograd on the composite formula.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, pos_rows: Tensor, pos_cols: Tensor, weight: Tensor | None,  # type: ignore[override]
                gamma: float, alpha: float) -> Tensor:
        p = torch.sigmoid(logits)  # (M, C)
        log_1mp = F.logsigmoid(-logits)  # log(1 - p)
        p_gamma = p * p if gamma == 2.0 else p.pow(gamma)
        neg_loss = p_gamma * log_1mp  # -(loss of a negative) / (1 - alpha)
        xp = logits[pos_rows, pos_cols]  # (P,)
        pp = p[pos_rows, pos_cols]
        log_pp = F.logsigmoid(xp)
        one_m_pp = 1 - pp
        pos_loss = -alpha * one_m_pp.pow(gamma) * log_pp  # (P,)
        pos_as_neg = -(1 - alpha) * neg_loss[pos_rows, pos_cols]
        if weight is None:
            total = -(1 - alpha) * neg_loss.sum() + (pos_loss - pos_as_neg).sum()
        else:
            w = weight[:, None] if weight.dim() == 1 else weight
            wp = weight[pos_rows] if weight.dim() == 1 else weight[pos_rows, pos_cols]
            total = -(1 - alpha) * (neg_loss * w).sum() + ((pos_loss - pos_as_neg) * wp).sum()
        ctx.save_for_backward(p, log_1mp, p_gamma, pos_rows, pos_cols, weight)
        ctx.gamma, ctx.alpha = gamma, alpha
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        p, log_1mp, p_gamma, pos_rows, pos_cols, weight = ctx.saved_tensors
        gamma, alpha = ctx.gamma, ctx.alpha
        # negatives: d/dx [-(1-a) p^g log(1-p)] = (1-a) p^g (p - g (1-p) log(1-p))
        grad = torch.addcmul(p, 1 - p, log_1mp, value=-gamma)
        grad.mul_(p_gamma).mul_((1 - alpha) * grad_out)
        # positives: d/dx [-a (1-p)^g log p] = a (1-p)^g (g p log p - (1-p))
        pp = p[pos_rows, pos_cols]
        log_pp = torch.log(pp.clamp(min=1e-30))
        pos_grad = alpha * (1 - pp).pow(gamma) * (gamma * pp * log_pp - (1 - pp)) * grad_out
        grad.index_put_((pos_rows, pos_cols), pos_grad)
        if weight is not None:
            grad.mul_(weight[:, None] if weight.dim() == 1 else weight)
        return grad, None, None, None, None, None


def sigmoid_focal_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None, gamma: float = 2.0,
                       alpha: float = 0.25, reduction: str = "mean",
                       avg_factor: float | Tensor | None = None) -> Tensor:
    """Sigmoid focal loss ``-alpha_t (1 - p_t) ** gamma log(p_t)``.

    Args:
        pred (Tensor[M, C]): logits.
        target (Tensor[M]): class indices, ``C`` (or any value outside ``[0, C)``) = background;
            or Tensor[M, C] binary one-hot targets.
        weight (Tensor[M] or Tensor[M, C]): element weights.

    Returns:
        The reduced loss, or Tensor[M, C] with ``reduction='none'``.
    """
    _check_reduction(reduction)
    num_classes = pred.shape[1]
    if target.dim() == 1:
        pos = (target >= 0) & (target < num_classes)
        rows = pos.nonzero(as_tuple=True)[0]
        cols = target[rows]
    else:
        rows, cols = (target > 0.5).nonzero(as_tuple=True)
    if reduction == "none":
        onehot = torch.zeros_like(pred)
        onehot[rows, cols] = 1.0
        p = pred.sigmoid()
        pt = (1 - p) * onehot + p * (1 - onehot)
        focal = (alpha * onehot + (1 - alpha) * (1 - onehot)) * pt.pow(gamma)
        loss = F.binary_cross_entropy_with_logits(pred, onehot, reduction="none") * focal
        if weight is not None:
            loss = loss * (weight[:, None] if weight.dim() == 1 else weight)
        return loss
    if weight is not None and weight.dim() == 2 and weight.shape[1] == 1:
        weight = weight[:, 0]
    total = _SigmoidFocalSum.apply(pred, rows, cols, weight, float(gamma), float(alpha))
    if avg_factor is not None:
        if reduction == "sum":
            raise ValueError("avg_factor can not be used with reduction='sum'")
        return total / avg_factor
    return total / max(pred.numel(), 1) if reduction == "mean" else total


@LOSSES.register()
class FocalLoss(_ReducedLoss):
    """Sigmoid focal loss (Lin et al.); the background is the class index ``num_classes``.

    Args:
        use_sigmoid: must be True (only the sigmoid form exists).
        gamma: focusing parameter.
        alpha: weight of the positive term (negatives get ``1 - alpha``).
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result.
        activated: must be False (``pred`` are logits).

    Example (logit 0: p = 0.5):
        >>> FocalLoss()(torch.zeros(1, 1), torch.tensor([0]))   # positive: 0.25 * 0.25 * ln 2
        tensor(0.0433)
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float = 0.25,
                 reduction: str = "mean", loss_weight: float = 1.0, activated: bool = False) -> None:
        super().__init__(reduction, loss_weight)
        if not use_sigmoid:
            raise ValueError("FocalLoss supports only use_sigmoid=True (set use_sigmoid: true)")
        if activated:
            raise ValueError("FocalLoss expects logits: activated=True is not supported (set activated: false)")
        self.use_sigmoid = use_sigmoid
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.activated = activated

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """pred (Tensor[M, C]) logits; target (Tensor[M]) labels with background ``C``; weight (Tensor[M])."""
        return self.loss_weight * sigmoid_focal_loss(
            pred, target, weight, self.gamma, self.alpha, self._reduction(reduction_override), avg_factor)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, " + super().extra_repr()


def mask_cross_entropy(pred: Tensor, target: Tensor, labels: Tensor | None,
                       class_weight: Sequence[float] | None = None) -> Tensor:
    """Mean binary cross-entropy of each RoI's mask logits on the channel of its label.

    Args:
        pred (Tensor[K, C, H, W]): mask logits (``C == 1``: class-agnostic).
        target (Tensor[K, H, W]): mask targets in [0, 1].
        labels (Tensor[K]): channel of each RoI (None: channel 0).
        class_weight: per-class weights (scale the elements of RoIs of that class).

    Returns:
        A scalar; ``K == 0`` gives ``0`` still connected to ``pred``'s graph.

    Example:
        >>> mask_cross_entropy(torch.zeros(2, 3, 2, 2), torch.ones(2, 2, 2), torch.tensor([0, 2]))  # ln 2
        tensor(0.6931)
    """
    if pred.dim() != 4 or target.dim() != 3 or target.shape[0] != pred.shape[0]:
        raise ValueError(f"mask loss: pred must be (K, C, H, W) and target (K, H, W), got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[0] == 0:
        return pred.sum() * 0
    if labels is None:
        labels = torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device)
    labels = labels.long()
    rows = torch.arange(pred.shape[0], device=pred.device)
    picked = pred[rows, labels]  # (K, H, W)
    loss = F.binary_cross_entropy_with_logits(picked, target.to(picked.dtype), reduction="none")
    if class_weight is not None:
        loss = loss * pred.new_tensor(class_weight)[labels][:, None, None]
    return loss.mean()


@LOSSES.register()
class CrossEntropyLoss(_ReducedLoss):
    """Softmax cross-entropy over class indices, or binary cross-entropy on logits (``use_sigmoid``).

    Args:
        use_sigmoid: binary cross-entropy with logits (``target`` of the same shape, in [0, 1]).
        use_mask: per-RoI mask loss: ``pred (K, C, H, W)`` logits, ``target (K, H, W)`` in [0, 1]
            and, as the third argument, the labels ``(K,)`` picking the channel of each RoI; the
            binary cross-entropy is averaged over ``K * H * W`` (mmdet's ``mask_cross_entropy``).
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        class_weight: per-class weights (softmax form).
        ignore_index: target value that contributes no loss (softmax form).
        loss_weight: multiplier of the result.
        avg_non_ignore: average over the non-ignored elements only.

    Example:
        >>> CrossEntropyLoss()(torch.zeros(1, 3), torch.tensor([2]))   # ln 3
        tensor(1.0986)
    """

    def __init__(self, use_sigmoid: bool = False, use_mask: bool = False, reduction: str = "mean",
                 class_weight: Sequence[float] | None = None, ignore_index: int | None = None,
                 loss_weight: float = 1.0, avg_non_ignore: bool = False) -> None:
        super().__init__(reduction, loss_weight)
        if use_sigmoid and use_mask:
            raise ValueError("CrossEntropyLoss: use_sigmoid and use_mask are exclusive (set one of them)")
        self.use_sigmoid = use_sigmoid
        self.use_mask = use_mask
        self.class_weight = None if class_weight is None else tuple(float(c) for c in class_weight)
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """Softmax: pred (Tensor[M, C]) logits, target (Tensor[M]) int64. Sigmoid: pred, target same shape.
        Mask (``use_mask``): pred (Tensor[K, C, H, W]), target (Tensor[K, H, W]), weight = labels (Tensor[K])."""
        reduction = self._reduction(reduction_override)
        if self.use_mask:
            return self.loss_weight * mask_cross_entropy(pred, target, weight, self.class_weight)
        if self.use_sigmoid:
            loss = F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="none")
            if self.class_weight is not None:
                loss = loss * pred.new_tensor(self.class_weight)
            return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)
        ignore = -100 if self.ignore_index is None else self.ignore_index
        cw = None if self.class_weight is None else pred.new_tensor(self.class_weight)
        loss = F.cross_entropy(pred, target, weight=cw, reduction="none", ignore_index=ignore)  # (M,)
        if avg_factor is None and self.avg_non_ignore and reduction == "mean":
            avg_factor = (target != ignore).sum().item()
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


def quality_focal_loss(pred: Tensor, label: Tensor, score: Tensor, beta: float = 2.0,
                       activated: bool = False) -> Tensor:
    """Element-wise Quality Focal Loss (Li et al., GFL), summed over classes.

    Every (prior, class) pair is a binary problem whose target is ``score`` on the prior's class
    and 0 elsewhere: ``BCE(p, t) * |t - p| ** beta`` with ``p = sigmoid(pred)`` (so negatives get
    ``BCE(p, 0) * p ** beta``).

    Args:
        pred (Tensor[M, C]): logits (probabilities when ``activated``).
        label (Tensor[M]): class indices; any value outside ``[0, C)`` is background.
        score (Tensor[M]): the soft target (IoU) of each prior on its class.

    Returns:
        Tensor[M].
    """
    num_classes = pred.shape[1]
    if activated:
        prob = pred
        bce = F.binary_cross_entropy
    else:
        prob = pred.sigmoid()
        bce = F.binary_cross_entropy_with_logits
    loss = bce(pred, torch.zeros_like(pred), reduction="none") * prob.pow(beta)  # (M, C)
    rows = ((label >= 0) & (label < num_classes)).nonzero(as_tuple=True)[0]
    if rows.numel():
        cols = label[rows].long()
        target = score[rows].to(pred.dtype)
        pos_pred = pred[rows, cols]
        pos_loss = bce(pos_pred, target, reduction="none") * (target - prob[rows, cols]).abs().pow(beta)
        loss = loss.index_put((rows, cols), pos_loss)
    return loss.sum(dim=1)


def distribution_focal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise Distribution Focal Loss: cross-entropy on the two bins around a real target.

    A target ``y`` between bins ``i = floor(y)`` and ``i + 1`` gives
    ``(i + 1 - y) * CE(pred, i) + (y - i) * CE(pred, i + 1)`` (an integer target: ``CE(pred, y)``).

    Args:
        pred (Tensor[M, n + 1]): logits over the bins ``0..n``.
        target (Tensor[M]): in ``[0, n)`` (GFL clamps the distances to ``n - 0.1``).

    Returns:
        Tensor[M].
    """
    left = target.long()
    right = left + 1
    weight_left = right.to(target.dtype) - target
    weight_right = target - left.to(target.dtype)
    return (F.cross_entropy(pred, left, reduction="none") * weight_left
            + F.cross_entropy(pred, right, reduction="none") * weight_right)


@LOSSES.register()
class QualityFocalLoss(_ReducedLoss):
    """Quality Focal Loss (GFL): sigmoid classification against IoU-valued soft targets.

    Called as ``loss(pred, (labels, scores), weight, avg_factor)``; ``weight (M,)`` scales each
    prior's summed loss.

    Args:
        use_sigmoid: must be True (only the sigmoid form exists).
        beta: the modulating exponent on ``|target - p|``.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result.
        activated: ``pred`` are probabilities instead of logits.

    Example (logit 0, target 0.5 on class 0: only the other class contributes, 0.25 * ln 2):
        >>> QualityFocalLoss()(torch.zeros(1, 2), (torch.tensor([0]), torch.tensor([0.5])))
        tensor(0.1733)
    """

    def __init__(self, use_sigmoid: bool = True, beta: float = 2.0, reduction: str = "mean",
                 loss_weight: float = 1.0, activated: bool = False) -> None:
        super().__init__(reduction, loss_weight)
        if not use_sigmoid:
            raise ValueError("QualityFocalLoss supports only use_sigmoid=True (set use_sigmoid: true)")
        self.use_sigmoid = use_sigmoid
        self.beta = float(beta)
        self.activated = activated

    def forward(self, pred: Tensor, target: tuple[Tensor, Tensor], weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """pred (Tensor[M, C]); target: labels (Tensor[M]) with background ``C`` and scores (Tensor[M])."""
        labels, scores = target
        loss = quality_focal_loss(pred, labels, scores, self.beta, self.activated)
        return self.loss_weight * weight_reduce_loss(loss, weight, self._reduction(reduction_override), avg_factor)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


@LOSSES.register()
class DistributionFocalLoss(_ReducedLoss):
    """Distribution Focal Loss (GFL) on the bins of the integral box representation.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the result (GFL: 0.25).

    Example (uniform logits over 3 bins: ``ln 3`` whatever the target):
        >>> DistributionFocalLoss(loss_weight=1.0)(torch.zeros(1, 3), torch.tensor([0.5]))
        tensor(1.0986)
    """

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, reduction_override: str | None = None) -> Tensor:
        """pred (Tensor[M, n + 1]) bin logits; target (Tensor[M]) distances in bins; weight (Tensor[M])."""
        loss = distribution_focal_loss(pred, target)
        return self.loss_weight * weight_reduce_loss(loss, weight, self._reduction(reduction_override), avg_factor)


def centerness_target(distances: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

    Args:
        distances (Tensor[N, 4]): (left, top, right, bottom), all > 0.

    Returns:
        Tensor[N] in [0, 1]; ``(2, 4, 8, 16)`` gives 0.25.
    """
    lr = distances[:, 0::2]  # (N, 2)
    tb = distances[:, 1::2]
    if distances.numel() == 0:
        return distances.new_zeros(0)
    ratio = (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
    return torch.sqrt(ratio.clamp(min=0))


__all__ = [
    "CrossEntropyLoss", "DistributionFocalLoss", "FocalLoss", "GIoULoss", "IoULoss", "L1Loss",
    "QualityFocalLoss", "SmoothL1Loss", "centerness_target", "distribution_focal_loss", "l1_loss",
    "quality_focal_loss", "reduce_loss", "sigmoid_focal_loss", "smooth_l1_loss", "weight_reduce_loss", "weighted_loss",
]
