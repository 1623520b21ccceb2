"""The training section: `memberpulse train`'s network and dataset, and the default model
that `make run` trains once when no model exists (sizes fit 2 CPU cores)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from memberpulse.models.config import DatasetConfig, NetworkConfig, SASRecConfig, TrainConfig
from memberpulse.streams.settings.base import Section, section_config


class TrainingSettings(Section):
    """`train_*` and `default_model_*`."""

    model_config = section_config("train_")

    hidden: int = Field(64, ge=8, description="transformer width")
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    ffn: int = Field(128, ge=8, description="feed-forward width")
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(4, ge=1, description="epochs at most (time protocol)")
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    patience: int = Field(3, ge=1, description="epochs without improvement before stopping")
    horizon_days: int = Field(30, ge=1, description="churn / spend horizon H")
    sequence_length: int = Field(32, ge=1, description="latest events the model reads")
    stride_days: int = Field(14, ge=1, description="days between training cutoffs")
    min_item_count: int = Field(2, ge=1, description="rarer items share hash buckets")
    hash_buckets: int = Field(256, ge=0)
    price_buckets: int = Field(16, ge=2)
    threads: int = Field(0, ge=0, description="torch threads (0: torch's default)")
    sampled_negatives: int = Field(
        512, ge=0, description="next-item sampled softmax size (0: full softmax)"
    )
    short_horizon_weight: float = Field(
        0.5, ge=0, description="weight of the churn targets at 1/4 and 1/2 of the horizon"
    )
    latest_weight: float = Field(
        0.0, ge=0, description="extra weight of the next item after the cutoff (full softmax)"
    )
    repeat_lr_scale: float = Field(
        30.0, gt=0, description="learning rate of the repeat scores, × the learning rate"
    )
    loo_epochs: int = Field(30, ge=1, description="epochs at most with --protocol leave-one-out")
    loo_patience: int = Field(
        5, ge=1, description="leave-one-out: epochs without a better validation NDCG@10"
    )
    loo_windows: int = Field(8, ge=1, description="leave-one-out: sequence windows per member")
    loo_sampled_negatives: int = Field(
        0, ge=0, description="leave-one-out: next-item sampled softmax size (0: full softmax)"
    )
    validation: Literal["time", "members"] = Field(
        "members", description="hold out 10% of members (members) or the last horizon (time)"
    )
    # --- SASRec, the next-item baseline (Kang & McAuley 2018's settings by default) -----
    sasrec_hidden: int = Field(50, ge=8, description="SASRec embedding size d")
    sasrec_blocks: int = Field(2, ge=1, description="SASRec self-attention blocks")
    sasrec_dropout: float = Field(0.2, ge=0, lt=1, description="SASRec dropout")
    sasrec_max_length: int = Field(50, ge=2, description="SASRec maximum sequence length")
    sasrec_max_epochs: int = Field(200, ge=1, description="SASRec epochs at most")
    sasrec_patience: int = Field(
        10, ge=1, description="SASRec epochs without a better validation NDCG@10"
    )

    # --- The default model (`make run` trains it once when no model exists) ------------
    default_model_members: int = Field(
        3_000, ge=50, alias="default_model_members", description="simulated members"
    )
    default_model_days: int = Field(
        120, ge=60, alias="default_model_days", description="days of simulated history"
    )
    default_model_epochs: int = Field(3, ge=1, alias="default_model_epochs")

    def config(self, **overrides: Any) -> TrainConfig:
        """The training configuration; `overrides` are TrainConfig fields (e.g. seed)."""
        network = NetworkConfig(
            hidden=self.hidden,
            layers=self.layers,
            heads=self.heads,
            ffn=self.ffn,
            dropout=self.dropout,
        )
        dataset = DatasetConfig(
            horizon_days=overrides.pop("horizon_days", self.horizon_days),
            sequence_length=self.sequence_length,
            stride_days=self.stride_days,
            min_item_count=self.min_item_count,
            hash_buckets=self.hash_buckets,
            price_buckets=self.price_buckets,
            validation=self.validation,
        )
        sasrec = SASRecConfig(
            hidden=self.sasrec_hidden,
            blocks=self.sasrec_blocks,
            dropout=self.sasrec_dropout,
            max_length=self.sasrec_max_length,
            max_epochs=self.sasrec_max_epochs,
            patience=self.sasrec_patience,
            seed=overrides.get("seed", 0),
        )
        loo = overrides.get("protocol") == "leave-one-out"
        return TrainConfig(
            network=network,
            dataset=dataset,
            sasrec=sasrec,
            epochs=overrides.pop("epochs", self.loo_epochs if loo else self.epochs),
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.loo_patience if loo else self.patience,
            threads=self.threads,
            sampled_negatives=self.loo_sampled_negatives if loo else self.sampled_negatives,
            latest_weight=self.latest_weight,
            repeat_lr_scale=self.repeat_lr_scale,
            short_horizon_weight=self.short_horizon_weight,
            loo_windows=self.loo_windows,
            **overrides,
        )
