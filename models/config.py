"""Training configuration: the network's size, the dataset's cutoffs, the optimiser.

Frozen dataclasses with documented defaults, small enough to train on 2 CPU cores in a
few minutes on simulator data; `Settings.training.config()` fills them from `MEMBERPULSE_*`
and the CLI. The network part is saved with every checkpoint, so a model is rebuilt from
its bundle alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["time", "leave-one-out"]


@dataclass(frozen=True)
class NetworkConfig:
    """The transformer's size (saved with the checkpoint)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int = 128
    dropout: float = 0.1
    causal: bool = True  # each event attends to earlier ones only (dense next-item training)
    spend_scale: float = 100.0  # spend is modelled in units of this many currency units
    transitions: int = 16  # follow-up items kept per item in the transition table
    # Auxiliary churn targets at these shares of the horizon (no purchase within them).
    short_horizons: tuple[float, ...] = (0.25, 0.5)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(
                f"hidden size {self.hidden} must be a multiple of the number of heads {self.heads}"
            )


@dataclass(frozen=True)
class DatasetConfig:
    """How training examples are cut from an event log."""

    horizon_days: int = 30  # churn = no purchase within this many days after the cutoff
    sequence_length: int = 32  # latest events the model reads (≤ the state's L)
    stride_days: int = 14  # one cutoff every this many days, aligned back from the last
    min_history_days: int = 7  # the first cutoff comes this long after the log starts
    min_item_count: int = 2  # items seen fewer times in training become hash buckets
    hash_buckets: int = 256
    price_buckets: int = 16  # quantile edges of training prices
    # Validation: "time" holds out the last horizon before `until` and trains on cutoffs a
    # further horizon earlier (no label overlap at all); "members" holds out a share of
    # members at the last cutoff and trains everyone else on cutoffs up to it, so the
    # training history is as deep as at test time. Tests are always by time (`evaluate`).
    validation: Literal["time", "members"] = "members"
    valid_share: float = 0.1


@dataclass(frozen=True)
class SASRecConfig:
    """The paper's hyper-parameters (Kang & McAuley 2018, section IV)."""

    hidden: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_length: int = 50
    batch_size: int = 128
    learning_rate: float = 1e-3
    max_epochs: int = 200
    patience: int = 10  # epochs without a better validation NDCG@10
    seed: int = 0
    eval_batch_size: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Everything `memberpulse train` needs besides the data."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    protocol: Protocol = "time"
    epochs: int = 4
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    patience: int = 3  # epochs without a better validation loss before stopping
    seed: int = 0
    next_item_weight: float = 0.5  # loss = churn + weight × next item + spend weight × spend
    spend_weight: float = 0.5
    # The next item at every position: sampled softmax over this many items drawn from
    # the training frequencies (log-Q corrected); 0 or a smaller catalogue: full softmax.
    sampled_negatives: int = 512
    # Extra weight of the latest position's target (the first event after the cutoff, what
    # serving ranks for) by the full softmax, on top of the every-position loss.
    latest_weight: float = 0.0
    # The repeat scores (one scalar per event type and distance) learn this many times
    # faster than the other parameters (see train._parameter_groups).
    repeat_lr_scale: float = 30.0
    short_horizon_weight: float = 0.5  # weight of the shorter-horizon churn targets
    loo_windows: int = 8  # leave-one-out: sequence windows per member (see sequence_windows)
    eval_batch_size: int = 1024
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores)
    # Next-item baselines: the Markov chain always; SASRec with the leave-one-out protocol,
    # and with the time protocol only when asked (`train --baselines`; it takes minutes).
    baselines: bool = False
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
