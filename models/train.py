"""`memberpulse train`: event log → point-in-time samples → a trained model directory.

Seeded and reproducible, CPU by default, CUDA with bf16 autocast when present. One
validation pass per epoch; the best epoch by validation loss is kept and training stops
after `patience` epochs without improvement. The RFM baseline is fitted on the very
training samples the network sees, so the comparison in `metrics.json` is like for like.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.nn import functional as F

from memberpulse.models import baseline_suite
from memberpulse.models.baselines import LogisticRegression, rfm_features
from memberpulse.models.bundle import METRICS_FILE, save_bundle, save_heldout, write_json
from memberpulse.models.config import TrainConfig
from memberpulse.models.dataset import (
    NO_NEXT,
    Samples,
    Split,
    build_prefix_samples,
    build_samples,
    build_vocabulary,
    sequence_windows,
    split,
    with_normalisation,
)
from memberpulse.models.eventlog import EventLog
from memberpulse.models.features import FeatureBatch, FeatureSpec, schema_hash
from memberpulse.models.metrics import ndcg_at_k, ranks_of_targets, recall_at_k, roc_auc
from memberpulse.models.network import MemberTransformer, Vocabulary, latest_output
from memberpulse.models.report import evaluate_samples, write_plots
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import to_iso
from memberpulse.models.transitions import build_transitions

_ITEMS, _MASK = FeatureBatch._fields.index("items"), FeatureBatch._fields.index("mask")
_TYPES = FeatureBatch._fields.index("types")
_IGNORE = -100  # cross-entropy target of rows/positions without a catalogue item
WARMUP_SHARE = 0.1  # linear warm-up over this share of the steps, then cosine decay
LOO_HELD_OUT = 2  # leave-one-out: each member's last event tests, the one before validates
TRANSITION_WEIGHTS = (
    0.0,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
)  # candidates, chosen on validation
RECALL_K = 10


class Progress(NamedTuple):
    """One training step or epoch, for whoever draws progress."""

    epoch: int
    step: int
    steps: int
    message: str


@dataclass
class TrainResult:
    """What a training run produced."""

    out: Path
    epochs_run: int
    best_epoch: int
    parameters: int
    seconds: float
    metrics: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)


class _Stages:
    """Wall time per training stage (metrics.json: training.stage_seconds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 1)
        self._last = now


def pick_device() -> torch.device:
    """CUDA when torch can use it, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)  # numpy draws use explicit Generators, never global state


def train(
    log: EventLog,
    out: Path,
    config: TrainConfig,
    state: StateSpec,
    until: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train on events before `until` (default: the whole log) and write a model to `out`."""
    started = time.perf_counter()
    clock = _Stages()
    report = on_progress or (lambda _: None)
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    loo = config.protocol == "leave-one-out"
    seen = log.without_last(LOO_HELD_OUT) if loo else log
    until = seen.end + 1 if until is None else until
    horizon = config.dataset.horizon_days
    spec = build_vocabulary(seen, until, config.dataset, state)
    if loo:  # per-member sequence windows, as SASRec trains (see `sequence_windows`)
        design = Split([], until)
        members, counts = sequence_windows(
            log, LOO_HELD_OUT, config.loo_windows, spec.sequence_length
        )
        report(Progress(0, 0, 0, f"building {len(members):,} leave-one-out sequence windows"))
        train_set = build_prefix_samples(log, members, counts, horizon, spec, state)
        spec = with_normalisation(spec, train_set.raw)
        train_set = train_set.normalised(spec)
        lengths = np.diff(log.offsets)
        valid = np.flatnonzero(lengths > LOO_HELD_OUT)  # target: each one's second-to-last
        valid_set = build_prefix_samples(
            log, valid, lengths[valid] - LOO_HELD_OUT, horizon, spec, state
        )
    else:
        design = split(seen, until, config.dataset)
        report(
            Progress(0, 0, 0, f"building samples at {len(design.train_cutoffs)} training cutoffs")
        )
        train_set = build_samples(
            seen, design.train_cutoffs, horizon, spec, state, design.train_members
        )
        spec = with_normalisation(spec, train_set.raw)
        train_set = train_set.normalised(spec)
        valid_set = build_samples(
            seen, [design.valid_cutoff], horizon, spec, state, design.valid_members
        )
    train_cuts, valid_cut = design.train_cutoffs, design.valid_cutoff
    report(
        Progress(0, 0, 0, f"{len(train_set):,} training and {len(valid_set):,} validation samples")
    )
    clock.lap("samples")

    device = pick_device()
    item_counts = _catalogue_counts(seen, until, spec.items)
    model = MemberTransformer(config.network, Vocabulary.of(spec))
    model.init_item_prior(torch.as_tensor(item_counts))
    model.to(device)
    log_q = sampling_log_q(item_counts, config.sampled_negatives).to(device)
    history, best_epoch, epochs_run = _fit(
        model, train_set, valid_set, config, device, report, log_q
    )
    clock.lap("network")
    transitions = _fit_transitions(model, seen, until, spec, design, valid_set, config, device)
    report(Progress(0, 0, 0, _describe_transitions(transitions)))
    clock.lap("transitions")

    rfm = LogisticRegression().fit(rfm_features(*train_set.rfm.T), train_set.churn)
    popularity = np.bincount(
        train_set.next_item[train_set.next_item >= 0], minlength=len(spec.items)
    )
    baselines: dict[str, Any] = {"rfm": rfm.to_dict(), "item_counts": item_counts.tolist()}
    fitted_members = (
        np.arange(len(seen.members))
        if design.train_members is None
        else np.array(sorted(design.train_members), dtype=np.int64)
    )
    base = baseline_suite.fit_customer_base(seen, until, train_set, fitted_members)
    if base is not None:
        baselines["bgnbd"] = base.to_dict()
    clock.lap("churn_baselines")
    with_sasrec = config.baselines or config.protocol == "leave-one-out"
    report(
        Progress(0, 0, 0, "next-item baselines: Markov chain" + (", SASRec" if with_sasrec else ""))
    )
    next_baselines = baseline_suite.fit_next_item(
        log,
        spec,
        baseline_suite.visible_stops(log, until, config.protocol),
        item_counts,
        config.sasrec,
        device,
        with_sasrec,
        lambda message: report(Progress(0, 0, 0, message)),
    )
    clock.lap("next_item_baselines")
    metrics, curves = evaluate_samples(model, valid_set, spec, baselines, config, device)
    metrics["transitions"] = transitions
    if config.network.transitions:  # serve with the table of every member's events
        final = build_transitions(seen, until, spec, config.network.transitions)
        model.set_transitions(final.items, final.weights, transitions["weight"])
    metrics["training"] = {
        "samples": len(train_set),
        "valid_samples": len(valid_set),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "parameters": model.parameter_count(),
        "device": str(device),
        "next_item_targets_in_train": int(popularity.sum()),
    }
    if next_baselines.sasrec is not None:
        metrics["training"]["sasrec"] = next_baselines.sasrec.summary()
    clock.lap("validation_report")
    seconds = time.perf_counter() - started
    metrics["train_seconds"] = round(seconds, 1)
    metrics["training"]["stage_seconds"] = clock.seconds
    run_config = {
        **asdict(config),
        "until": until,
        "until_iso": to_iso(until),
        "train_cutoffs": train_cuts,
        "valid_cutoff": valid_cut,
        "valid_members": None if design.valid_members is None else len(design.valid_members),
        "log_start": log.start,
        "state": asdict(state),
        "schema": schema_hash(),
    }
    save_bundle(out, model.cpu(), spec, run_config, baselines)
    next_baselines.save(out)
    save_heldout(out, valid_set.features, valid_set.churn, valid_set.next_item)
    write_json(out / METRICS_FILE, metrics)
    write_plots(out, history, curves)
    return TrainResult(
        out,
        epochs_run,
        best_epoch,
        model.parameter_count(),
        seconds,
        metrics,
        history,
    )


def _fit_transitions(
    model: MemberTransformer,
    log: EventLog,
    until: int,
    spec: FeatureSpec,
    design: Split,
    valid_set: Samples,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Choose the transition table's weight by validation recall@10.

    The table used here never saw a validation label: for a member split it counts the
    training members' events only, for a time split the events before the validation
    cutoff. It stays installed (for the validation metrics) until `train` swaps in the
    table of every member's events for serving.
    """
    top_m = config.network.transitions
    if not top_m:
        return {"weight": 0.0, "valid_recall@10": {}}
    clean_until = until if design.valid_members is not None else design.valid_cutoff
    table = build_transitions(log, clean_until, spec, top_m, design.train_members)
    model.set_transitions(table.items, table.weights, 0.0)
    ranks: dict[float, list[NDArray[np.int64]]] = {w: [] for w in TRANSITION_WEIGHTS}
    targets = np.where(valid_set.next_item >= 0, valid_set.next_item, -1)
    rows = np.flatnonzero(valid_set.next_item != NO_NEXT)  # members with a next event
    model.eval().to(device)
    with torch.no_grad():  # one network pass; each weight only rescales the table's part
        for start in range(0, len(rows), config.eval_batch_size):
            chunk = rows[start : start + config.eval_batch_size]
            columns = [torch.as_tensor(c, device=device) for c in valid_set.features.take(chunk)]
            items, types, mask = columns[0], columns[1], columns[6]
            model.transition_weight.fill_(0.0)
            network_part = model(*columns).item_scores
            model.transition_weight.fill_(1.0)
            table_part = model.transition_scores(items, types, mask)
            for weight in TRANSITION_WEIGHTS:
                scores = (network_part + weight * table_part).float().cpu().numpy()
                ranks[weight].append(ranks_of_targets(scores, targets[chunk]))
    recall = {
        f"{w:g}": recall_at_k(np.concatenate(r), RECALL_K) if len(rows) else 0.0
        for w, r in ranks.items()
    }
    best = max(TRANSITION_WEIGHTS, key=lambda w: recall[f"{w:g}"])
    model.set_transitions(table.items, table.weights, best)
    return {"weight": best, "top_m": top_m, "valid_recall@10": recall}


def _describe_transitions(fitted: dict[str, Any]) -> str:
    recall = fitted["valid_recall@10"]
    if not recall:
        return "transition table off"
    chosen = f"{fitted['weight']:g}"
    return (
        f"transition table weight {chosen} (validation recall@10 {recall[chosen]:.4f}; "
        f"without the table {recall['0']:.4f})"
    )


def _catalogue_counts(log: EventLog, until: int, items: tuple[str, ...]) -> NDArray[np.int64]:
    """Interactions per catalogue item before `until` (the popularity baseline)."""
    counts = np.bincount(log.items[log.ts < until], minlength=len(log.item_names))
    position = {name: i for i, name in enumerate(log.item_names)}
    return np.array([counts[position[item]] for item in items], dtype=np.int64)


def _parameter_groups(model: MemberTransformer, config: TrainConfig) -> list[dict[str, Any]]:
    """The repeat scores learn `repeat_lr_scale` × faster than the rest. Adam moves a
    parameter by about one learning rate per step whatever its gradient, and a repeat
    score starts at 0 and must reach several units (an item the member bought weeks ago
    against 5,000 others): a short run (the time protocol: ~700 steps, warm-up and
    cosine decay) left them near 0.7 where the leave-one-out run (~3,000 steps) got 2–3,
    and the network lost to the member's own recent items."""
    repeat = [model.repeat]
    rest = [p for p in model.parameters() if p is not model.repeat]
    return [
        {"params": rest},
        {"params": repeat, "lr": config.learning_rate * config.repeat_lr_scale},
    ]


def _fit(
    model: MemberTransformer,
    train_set: Samples,
    valid_set: Samples,
    config: TrainConfig,
    device: torch.device,
    report: Callable[[Progress], None],
    log_q: Tensor,
) -> tuple[dict[str, list[float]], int, int]:
    optimiser = torch.optim.AdamW(
        _parameter_groups(model, config), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(total * WARMUP_SHARE))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            min(1.0, (step + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
        ),
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: dict[str, list[float]] = {"train_loss": [], "valid_loss": [], "valid_ndcg@10": []}
    # Early stopping: on the validation loss (churn, next item and spend), or on the
    # next-item NDCG@10 under leave-one-out, where the next item is what is judged.
    by_ndcg = config.protocol == "leave-one-out"
    best, best_epoch, best_state, stale = math.inf, 0, None, 0
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_set), generator=generator).numpy()
        running = 0.0
        for step, rows in enumerate(_chunks(order, config.batch_size), start=1):
            batch = _batch(train_set, rows, device, log_q)
            with _autocast(device):
                loss = _loss(model, batch, config, dense=True)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            running += float(loss.detach())
            report(Progress(epoch, step, steps_per_epoch, f"loss {running / step:.4f}"))
        valid_loss, valid_auc, valid_ndcg = _validate(model, valid_set, config, device)
        history["train_loss"].append(running / max(steps_per_epoch, 1))
        history["valid_loss"].append(valid_loss)
        history["valid_ndcg@10"].append(valid_ndcg)
        criterion = -valid_ndcg if by_ndcg else valid_loss
        improved = criterion < best
        if improved:
            best, best_epoch, stale = criterion, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        report(
            Progress(
                epoch,
                steps_per_epoch,
                steps_per_epoch,
                f"epoch {epoch}: train {history['train_loss'][-1]:.4f} "
                f"valid {valid_loss:.4f}{' (best)' if improved else ''}, "
                f"valid churn ROC-AUC {valid_auc:.4f}, next-item NDCG@10 {valid_ndcg:.4f}",
            )
        )
        if stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch, epoch


class _Batch(NamedTuple):
    inputs: list[Tensor]
    churn: Tensor
    spend: Tensor
    next_item: Tensor
    log_q: Tensor | None = None  # log(sampled_negatives × sampling probability) per item
    wait_days: Tensor | None = None  # days to the first purchase after the cutoff (inf: none)


def _batch(
    samples: Samples,
    rows: NDArray[np.int64],
    device: torch.device,
    log_q: Tensor | None = None,
) -> _Batch:
    features: FeatureBatch = samples.features.take(rows)
    return _Batch(
        [torch.as_tensor(column, device=device) for column in features],
        torch.as_tensor(samples.churn[rows], device=device),
        torch.as_tensor(samples.spend[rows], device=device),
        torch.as_tensor(samples.next_item[rows], device=device),
        log_q,
        torch.as_tensor(samples.wait_days[rows], device=device),
    )


def sampling_log_q(item_counts: NDArray[np.int64], draws: int) -> Tensor:
    """log(draws × q_i) for the sampling distribution q ∝ count + 1 (every item drawable)."""
    counts = torch.as_tensor(item_counts, dtype=torch.float64) + 1.0
    return torch.log(draws * counts / counts.sum()).float()


def _chunks(order: NDArray[np.int64], size: int) -> Iterator[NDArray[np.int64]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@overload
def _loss(model: MemberTransformer, batch: _Batch, config: TrainConfig, dense: bool) -> Tensor: ...
@overload
def _loss(
    model: MemberTransformer,
    batch: _Batch,
    config: TrainConfig,
    dense: bool,
    with_logits: Literal[True],
) -> tuple[Tensor, Tensor, Tensor]: ...
def _loss(
    model: MemberTransformer,
    batch: _Batch,
    config: TrainConfig,
    dense: bool,
    with_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """churn + w_item × next item + w_spend × spend.

    `dense` (training): the next item at every position whose target is a catalogue item
    (event j's output predicts event j + 1; the latest event's predicts the first event
    after the cutoff), by sampled softmax. Otherwise (validation): the latest position's
    target only, by the full softmax, so that the early-stopping criterion is exact.
    `with_logits`: also the churn logits and the latest position's item scores (validation
    ranks with them instead of running the encoder again).
    """
    hidden = model.hidden(batch.inputs)
    latest = latest_output(hidden, batch.inputs[_MASK])
    z = model.member(hidden[:, -1], latest)
    churn_logit = model.churn_head(z).squeeze(-1)
    loss = _churn_spend_loss(churn_logit, model.spend_head(z).squeeze(-1), batch, config)
    if dense and config.short_horizon_weight and batch.wait_days is not None:
        loss = loss + config.short_horizon_weight * _short_horizon_loss(model, z, batch, config)
    every_position = dense and model.config.causal and batch.log_q is not None
    scores = None
    if not every_position or config.latest_weight or with_logits:
        scores = _latest_scores(model, latest, batch)
    if every_position:
        assert batch.log_q is not None
        items = _every_position_loss(model, hidden[:, :-1], batch, batch.log_q, config)
        if config.latest_weight:  # the serving target again, by the full softmax
            assert scores is not None
            items = items + config.latest_weight * _latest_position_loss(scores, batch)
    else:
        assert scores is not None
        items = _latest_position_loss(scores, batch)
    loss = loss + config.next_item_weight * items
    if with_logits:
        assert scores is not None
        return loss, churn_logit.detach(), scores.detach()
    return loss


def _short_horizon_loss(
    model: MemberTransformer, z: Tensor, batch: _Batch, config: TrainConfig
) -> Tensor:
    """BCE of "no purchase within share × horizon" for each of `short_horizons`."""
    shares = torch.as_tensor(model.config.short_horizons, device=z.device)
    if not len(shares):
        return z.sum() * 0.0
    assert batch.wait_days is not None
    limits = shares * config.dataset.horizon_days  # (K,) days
    labels = (batch.wait_days.unsqueeze(1) >= limits.unsqueeze(0)).float()  # (B, K)
    logits = model.short_churn_head(z).float()
    return F.binary_cross_entropy_with_logits(logits, labels)


def _latest_scores(model: MemberTransformer, latest: Tensor, batch: _Batch) -> Tensor:
    """(B, N) next-item scores at the latest position, as serving computes them (without
    the transition table, which is fitted after training)."""
    items, types, mask = batch.inputs[_ITEMS], batch.inputs[_TYPES], batch.inputs[_MASK]
    scores: Tensor = model.add_history(model.item_scores(latest), items, types, mask)
    return scores


def _targets(model: MemberTransformer, batch: _Batch) -> Tensor:
    """(B, L): the catalogue position each event output predicts (_IGNORE: none)."""
    first = model.vocab.first_item
    items = batch.inputs[_ITEMS].to(torch.long)
    mask = batch.inputs[_MASK]
    following = torch.where(mask[:, 1:] & (items[:, 1:] >= first), items[:, 1:] - first, _IGNORE)
    after = torch.where(batch.next_item >= 0, batch.next_item, _IGNORE).unsqueeze(1)
    targets = torch.cat([following, after], dim=1)
    return torch.where(mask, targets, _IGNORE)  # a padding position predicts nothing


def _every_position_loss(
    model: MemberTransformer, events: Tensor, batch: _Batch, log_q: Tensor, config: TrainConfig
) -> Tensor:
    """Sampled softmax over the catalogue with the log-Q correction (Bengio & Senécal
    2008; Jean et al. 2015): `sampled_negatives` items drawn with replacement from the
    training item frequencies, shared by the batch; each logit is lowered by
    log(expected draws of its item) so that the loss is consistent for the full softmax;
    a draw equal to the row's target is masked. With a catalogue no larger than the
    sample, the full softmax is used instead (exact)."""
    targets = _targets(model, batch)
    known = targets != _IGNORE
    if not known.any():
        return events.sum() * 0.0
    queries = model.item_query(events[known]).float()  # (P, H)
    wanted = targets[known]
    catalogue = model.catalogue().float()
    n_items = catalogue.shape[0]
    draws = config.sampled_negatives
    # Repeat scores (`MemberTransformer.add_history`) at every position: what the
    # member's events up to j add to a candidate item.
    items = batch.inputs[_ITEMS].long()
    first = model.vocab.first_item
    history = torch.where(batch.inputs[_MASK] & (items >= first), items - first, -1)  # (B, L)
    weights = model.repeat_weights(batch.inputs[_TYPES]).float()  # (B, J, L)
    if draws <= 0 or n_items <= draws:
        # Each position's (event item, weight) pairs scattered into its N logits: O(P × L),
        # not the (B, L, N) one-hot product the sampled path can afford for S draws.
        held = history[known.nonzero(as_tuple=True)[0]]  # (P, L): each position's sequence
        repeat = weights[known] * (held >= 0)  # (P, L)
        scores = queries @ catalogue.T + model.item_bias
        scores = scores.scatter_add(1, held.clamp(min=0), repeat)
        return F.cross_entropy(scores, wanted)
    probabilities = torch.exp(log_q - math.log(draws))
    negatives = torch.multinomial(probabilities, draws, replacement=True)  # (S,)
    repeat_positive = (weights * (history.unsqueeze(1) == targets.unsqueeze(2))).sum(-1)[known]
    matches = (history.unsqueeze(2) == negatives.view(1, 1, -1)).float()  # (B, L, S)
    repeat_sampled = (weights @ matches)[known]  # (P, S)
    # Gathers as embedding lookups: their backward is deterministic on CPU (indexing's
    # accumulating scatter is not, and seeded runs must repeat exactly).
    bias = model.item_bias.unsqueeze(1)
    positive = (queries * F.embedding(wanted, catalogue)).sum(-1)
    positive = positive + F.embedding(wanted, bias).squeeze(1) - log_q[wanted] + repeat_positive
    sampled = queries @ F.embedding(negatives, catalogue).T + repeat_sampled
    sampled = sampled + (F.embedding(negatives, bias).squeeze(1) - log_q[negatives]).unsqueeze(0)
    sampled = sampled.masked_fill(negatives.unsqueeze(0) == wanted.unsqueeze(1), -math.inf)
    logits = torch.cat([positive.unsqueeze(1), sampled], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(wanted))


def _latest_position_loss(scores: Tensor, batch: _Batch) -> Tensor:
    """Full-softmax cross-entropy of the first event after the cutoff."""
    known = batch.next_item >= 0
    # Rows without a catalogue target contribute nothing (ignore_index), never NaN.
    targets = torch.where(known, batch.next_item, _IGNORE)
    total = F.cross_entropy(scores.float(), targets, ignore_index=_IGNORE, reduction="sum")
    return total / known.sum().clamp(min=1)


def _churn_spend_loss(
    churn_logit: Tensor, spend_log: Tensor, batch: _Batch, config: TrainConfig
) -> Tensor:
    churn = F.binary_cross_entropy_with_logits(churn_logit.float(), batch.churn)
    rate = batch.spend / config.network.spend_scale
    spend = F.poisson_nll_loss(spend_log.float(), rate, log_input=True, full=False)
    return churn + config.spend_weight * spend


@torch.no_grad()
def _validate(
    model: MemberTransformer, samples: Samples, config: TrainConfig, device: torch.device
) -> tuple[float, float, float]:
    """Validation loss, churn ROC-AUC and next-item NDCG@10 (full ranking, latest position)."""
    model.eval()
    total, n = 0.0, 0
    logits, ranks = [], []
    targets = np.where(samples.next_item >= 0, samples.next_item, -1)
    for rows in _chunks(np.arange(len(samples)), config.eval_batch_size):
        batch = _batch(samples, rows, device)
        with _autocast(device):
            loss, churn_logit, scores = _loss(model, batch, config, dense=False, with_logits=True)
        total += float(loss) * len(rows)
        n += len(rows)
        logits.append(churn_logit.float().cpu().numpy())
        has_next = samples.next_item[rows] != NO_NEXT
        ranks.append(
            ranks_of_targets(scores.float().cpu().numpy()[has_next], targets[rows][has_next])
        )
    labels = samples.churn
    auc = roc_auc(labels, np.concatenate(logits)) if len(np.unique(labels)) == 2 else float("nan")
    every = np.concatenate(ranks)
    ndcg = ndcg_at_k(every, RECALL_K) if len(every) else float("nan")
    return total / max(n, 1), auc, ndcg
