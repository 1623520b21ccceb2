"""The simulated catalog: items, categories, prices, popularity and item-to-item transitions.

The transitions are what makes "the next item" learnable: each item has a short row of
follow-up items (the next volume of its series when it has one, then complements drawn
mostly from a few related categories), with fixed weights. Sessions and orders walk these
rows, so the recent items of a member predict the next one far better than popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Seed stream of the catalog: members use other streams, so the catalog does not move
#: when the member count changes.
CATALOG_STREAM = 0


@dataclass(frozen=True)
class CatalogConfig:
    """Size and shape of the catalog (defaults: 5,000 items in 40 categories)."""

    n_items: int = 5_000
    n_categories: int = 40
    #: Zipf exponent of item popularity (rank^-a) and of category sizes.
    item_zipf: float = 0.9
    category_zipf: float = 0.8
    #: Category price levels are lognormal around this median; items scatter around them.
    price_level_median: float = 25.0
    price_level_sigma: float = 0.7
    item_price_sigma: float = 0.45
    min_price: float = 0.99
    #: Each category has this many related categories where most complements come from.
    related_categories: int = 3
    complements_per_item: int = 6
    complement_related_share: float = 0.7
    #: Share of items that belong to a series (volume k → volume k+1), and series lengths.
    series_share: float = 0.25
    series_min_len: int = 3
    series_max_len: int = 6
    #: Transition mass on the next volume of a series when the item has one.
    series_weight: float = 0.5
    #: Decay of complement weights along a row (weight of slot j ∝ (j+1)^-decay).
    complement_decay: float = 0.7
    #: Candidates per draw when a member weighs price: the cheapest wins more often.
    price_tournament: int = 3

    def __post_init__(self) -> None:
        if self.n_categories < 2 or self.n_items < self.n_categories:
            raise ValueError(
                f"need n_categories >= 2 and n_items >= n_categories, "
                f"got {self.n_items} items, {self.n_categories} categories"
            )
        if not 1 <= self.related_categories < self.n_categories:
            raise ValueError(f"related_categories must be in [1, {self.n_categories - 1}]")
        if self.series_min_len < 2 or self.series_max_len < self.series_min_len:
            raise ValueError(
                f"series lengths must satisfy 2 <= min <= max, "
                f"got {self.series_min_len}..{self.series_max_len}"
            )


@dataclass(frozen=True, eq=False)
class Catalog:
    """Items and their transitions; arrays are indexed by item or category number."""

    config: CatalogConfig
    item_ids: tuple[str, ...]
    category_ids: tuple[str, ...]
    item_category: NDArray[np.int32]
    price: NDArray[np.float64]
    popularity: NDArray[np.float64]
    category_share: NDArray[np.float64]
    category_level: NDArray[np.float64]
    relative_price: NDArray[np.float64]  # price / its category's level
    related: NDArray[np.int32]  # (n_categories, related_categories)
    series_next: NDArray[np.int32]  # -1 where the item ends or has no series
    transitions: NDArray[np.int32]  # (n_items, complements_per_item + 1)
    transition_cdf: NDArray[np.float64]  # same shape, each row ends at 1.0
    by_category: NDArray[np.int32]  # item numbers grouped by category
    category_key: NDArray[np.float64]  # category + cumulative popularity inside it
    # The same rows as Python lists: the per-step walk reads them ~10⁷ times, and list
    # indexing plus bisect is ~10x cheaper than numpy scalar access.
    transition_rows: list[list[int]]
    transition_cdf_rows: list[list[float]]
    relative_price_list: list[float]

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    def sample_items(
        self,
        rng: np.random.Generator,
        categories: NDArray[np.intp],
        sensitivity: NDArray[np.float64],
    ) -> NDArray[np.int32]:
        """One item per entry of `categories`: by popularity inside the category, with
        cheaper candidates favoured by (price / category level)^-sensitivity."""
        n = len(categories)
        keys = categories[:, None] + rng.random((n, self.config.price_tournament))
        slots = np.minimum(np.searchsorted(self.category_key, keys, side="right"), self.n_items - 1)
        candidates = self.by_category[slots]  # (n, tournament)
        relative = self.relative_price[candidates]
        cumulative = np.cumsum(relative ** -sensitivity[:, None], axis=1)
        threshold = rng.random((n, 1)) * cumulative[:, -1:]
        pick = np.minimum((cumulative < threshold).sum(axis=1), candidates.shape[1] - 1)
        picked: NDArray[np.int32] = candidates[np.arange(n), pick]
        return picked


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Normalised rank^-exponent weights over `n` entries in random rank order."""
    ranks = rng.permutation(n) + 1
    weights: NDArray[np.float64] = ranks.astype(np.float64) ** -exponent
    return weights / float(weights.sum())


def build_catalog(config: CatalogConfig, seed: int) -> Catalog:
    """The catalog of a simulation: depends on `config` and `seed` only."""
    rng = np.random.default_rng([seed, CATALOG_STREAM])
    n_cat, n_items = config.n_categories, config.n_items
    category_share = zipf_weights(n_cat, config.category_zipf, rng)
    # The first n_cat items seed one category each, so no category is empty.
    rest = rng.choice(n_cat, size=n_items - n_cat, p=category_share)
    item_category = np.concatenate([np.arange(n_cat), rest]).astype(np.int32)
    popularity = zipf_weights(n_items, config.item_zipf, rng)
    level = config.price_level_median * rng.lognormal(0.0, config.price_level_sigma, n_cat)
    raw_price = level[item_category] * rng.lognormal(0.0, config.item_price_sigma, n_items)
    price = np.maximum(np.round(raw_price, 2), config.min_price)

    by_category = np.lexsort((np.arange(n_items), item_category)).astype(np.int32)
    category_key = _category_keys(item_category, popularity, by_category)
    related = _related_categories(config, category_share, rng)
    series_next = _series(config, item_category, rng)
    complements = _complements(config, item_category, related, by_category, category_key, rng)
    transitions, cdf = _transition_rows(config, series_next, complements)
    return Catalog(
        config=config,
        item_ids=tuple(f"I{i:05d}" for i in range(n_items)),
        category_ids=tuple(f"C{c:02d}" for c in range(n_cat)),
        item_category=item_category,
        price=price,
        popularity=popularity,
        category_share=category_share,
        category_level=level,
        relative_price=price / level[item_category],
        related=related,
        series_next=series_next,
        transitions=transitions,
        transition_cdf=cdf,
        by_category=by_category,
        category_key=category_key,
        transition_rows=transitions.tolist(),
        transition_cdf_rows=cdf.tolist(),
        relative_price_list=(price / level[item_category]).tolist(),
    )


def _category_keys(
    item_category: NDArray[np.int32],
    popularity: NDArray[np.float64],
    by_category: NDArray[np.int32],
) -> NDArray[np.float64]:
    """c + cumulative popularity share inside c, in `by_category` order: one
    searchsorted on `c + u` then draws an item of category c by popularity."""
    cats = item_category[by_category]
    pop = popularity[by_category]
    starts = np.flatnonzero(np.r_[True, cats[1:] != cats[:-1]])
    sizes = np.diff(np.r_[starts, len(cats)])
    cumulative = np.cumsum(pop)
    before = np.repeat(np.r_[0.0, cumulative[starts[1:] - 1]], sizes)
    totals = np.repeat(np.add.reduceat(pop, starts), sizes)
    keys: NDArray[np.float64] = cats + (cumulative - before) / totals
    ends = np.r_[starts[1:] - 1, len(cats) - 1]
    keys[ends] = cats[ends] + 1.0  # exact upper edge: no draw can fall past its category
    return keys


def _related_categories(
    config: CatalogConfig, share: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.int32]:
    n_cat = config.n_categories
    related = np.empty((n_cat, config.related_categories), dtype=np.int32)
    for c in range(n_cat):
        others = np.delete(np.arange(n_cat), c)
        weights = share[others] / share[others].sum()
        related[c] = rng.choice(others, size=config.related_categories, replace=False, p=weights)
    return related


def _series(
    config: CatalogConfig, item_category: NDArray[np.int32], rng: np.random.Generator
) -> NDArray[np.int32]:
    """Chains of items inside one category: series_next[volume k] = volume k+1."""
    series_next = np.full(config.n_items, -1, dtype=np.int32)
    chosen = np.flatnonzero(rng.random(config.n_items) < config.series_share)
    for c in range(config.n_categories):
        members = rng.permutation(chosen[item_category[chosen] == c])
        start = 0
        while len(members) - start >= config.series_min_len:
            length = int(rng.integers(config.series_min_len, config.series_max_len + 1))
            volumes = members[start : start + length]
            series_next[volumes[:-1]] = volumes[1:]
            start += length
    return series_next


def _complements(
    config: CatalogConfig,
    item_category: NDArray[np.int32],
    related: NDArray[np.int32],
    by_category: NDArray[np.int32],
    category_key: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.int32]:
    """Complements per item (one extra for rows without a series), mostly from related
    categories, by popularity there."""
    n, k = config.n_items, config.complements_per_item + 1
    own = np.repeat(item_category[:, None], k, axis=1)
    pick_related = related[own, rng.integers(0, config.related_categories, (n, k))]
    use_related = rng.random((n, k)) < config.complement_related_share
    target = np.where(use_related, pick_related, own)
    slots = np.searchsorted(category_key, target + rng.random((n, k)), side="right")
    complements = by_category[np.minimum(slots, n - 1)]
    # An item is not its own complement: redraw those inside a related category.
    own_item = complements == np.arange(n)[:, None]
    redraw = np.searchsorted(category_key, pick_related + rng.random((n, k)), side="right")
    return np.where(own_item, by_category[np.minimum(redraw, n - 1)], complements)


def _transition_rows(
    config: CatalogConfig, series_next: NDArray[np.int32], complements: NDArray[np.int32]
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Rows of follow-up items and their cumulative weights (series volume first)."""
    k = config.complements_per_item + 1
    decay = np.arange(1, k + 1, dtype=np.float64) ** -config.complement_decay
    weights = np.repeat((decay / decay.sum())[None, :], config.n_items, axis=0)
    has_series = series_next >= 0
    rows = complements.astype(np.int32)
    rows[has_series, 0] = series_next[has_series]
    tail = decay[1:] / decay[1:].sum() * (1.0 - config.series_weight)
    weights[has_series] = np.r_[config.series_weight, tail]
    cdf = np.cumsum(weights, axis=1)
    cdf[:, -1] = 1.0
    return rows, cdf
