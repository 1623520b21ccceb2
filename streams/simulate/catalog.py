"""The simulated catalog: items, categories, prices, popularity, latent item vectors and
each item's neighbours.

Every item has a unit latent vector: its category's centroid plus its own noise, so items
of one category are alike and a member's taste (a vector in the same space, `members.py`)
prefers some items of a category over others. Each item has a row of neighbours (the next
volume of its series when it has one, then complements drawn mostly from a few related
categories, by popularity there), each with a base weight that grows with its latent
similarity to the item. A member walking from an item weighs these base weights by its
own taste (`items.TasteWalk`): the same item is followed by different neighbours for
different members, so counts of consecutive pairs see only the population's average and
a member's earlier items say which neighbours it will pick.
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
    complements_per_item: int = 23
    complement_related_share: float = 0.7
    #: Latent space of items and member tastes: an item's vector is its category's
    #: centroid + this × its own Gaussian noise, scaled to unit length.
    latent_dim: int = 16
    item_latent_noise: float = 0.8
    #: Base weight of a neighbour ∝ exp(this × cosine(item, neighbour)).
    neighbour_similarity: float = 2.0
    #: Share of items that belong to a series (volume k → volume k+1), and series lengths.
    series_share: float = 0.25
    series_min_len: int = 3
    series_max_len: int = 6
    #: Transition mass on the next volume of a series when the item has one.
    series_weight: float = 0.5
    #: Candidates per fresh pick (by popularity inside the category); the member's taste
    #: and price sensitivity choose among them.
    price_tournament: int = 8

    def __post_init__(self) -> None:
        if self.n_categories < 2 or self.n_items < self.n_categories:
            raise ValueError(
                f"need n_categories >= 2 and n_items >= n_categories, "
                f"got {self.n_items} items, {self.n_categories} categories"
            )
        if not 1 <= self.related_categories < self.n_categories:
            raise ValueError(f"related_categories must be in [1, {self.n_categories - 1}]")
        if self.latent_dim < 2 or self.complements_per_item < 1:
            raise ValueError("need latent_dim >= 2 and complements_per_item >= 1")
        if self.series_min_len < 2 or self.series_max_len < self.series_min_len:
            raise ValueError(
                f"series lengths must satisfy 2 <= min <= max, "
                f"got {self.series_min_len}..{self.series_max_len}"
            )


@dataclass(frozen=True, eq=False)
class Catalog:
    """Items, their latent vectors and neighbours; arrays are indexed by item or category
    number."""

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
    latent: NDArray[np.float64]  # (n_items, latent_dim), unit rows
    category_centroid: NDArray[np.float64]  # (n_categories, latent_dim), unit rows
    neighbours: NDArray[np.int32]  # (n_items, complements_per_item + 1)
    neighbour_log_weight: NDArray[np.float64]  # same shape: log base weights, rows sum to 1
    by_category: NDArray[np.int32]  # item numbers grouped by category
    category_key: NDArray[np.float64]  # category + cumulative popularity inside it
    # Rows as Python lists: the per-step walk reads them ~10⁷ times, and list indexing is
    # ~10x cheaper than numpy scalar access.
    neighbour_rows: list[list[int]]
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
        taste: tuple[NDArray[np.float64], NDArray[np.int64]] | None = None,
    ) -> NDArray[np.int32]:
        """One item per entry of `categories`: candidates by popularity inside the
        category, one of them chosen with weight (price / category level)^-sensitivity ×
        exp(taste); `taste` is (log-weights of shape (levels, n_items), the level of
        each entry)."""
        n = len(categories)
        keys = categories[:, None] + rng.random((n, self.config.price_tournament))
        slots = np.minimum(np.searchsorted(self.category_key, keys, side="right"), self.n_items - 1)
        candidates = self.by_category[slots]  # (n, tournament)
        relative = self.relative_price[candidates]
        log_weight = -sensitivity[:, None] * np.log(relative)
        if taste is not None:
            scores, levels = taste
            log_weight += scores[levels[:, None], candidates]
        weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
        cumulative = np.cumsum(weight, axis=1)
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
    # The latent space has its own stream: the draws above stay as they were without it.
    latent_rng = np.random.default_rng([seed, CATALOG_STREAM, 1])
    centroid, latent = _latent(config, item_category, latent_rng)
    neighbours, log_weight = _neighbour_rows(config, series_next, complements, latent)
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
        latent=latent,
        category_centroid=centroid,
        neighbours=neighbours,
        neighbour_log_weight=log_weight,
        by_category=by_category,
        category_key=category_key,
        neighbour_rows=neighbours.tolist(),
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


def unit_rows(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each row scaled to unit length."""
    norms: NDArray[np.float64] = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _latent(
    config: CatalogConfig, item_category: NDArray[np.int32], rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Unit category centroids and unit item vectors (centroid + noise)."""
    d = config.latent_dim
    centroid = unit_rows(rng.normal(size=(config.n_categories, d)))
    noise = rng.normal(size=(config.n_items, d)) / np.sqrt(d)
    return centroid, unit_rows(centroid[item_category] + config.item_latent_noise * noise)


def _neighbour_rows(
    config: CatalogConfig,
    series_next: NDArray[np.int32],
    complements: NDArray[np.int32],
    latent: NDArray[np.float64],
) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Rows of neighbours (series volume first) and their log base weights: the next
    volume gets `series_weight` of the mass, complements share the rest ∝
    exp(similarity × cosine)."""
    rows = complements.astype(np.int32)
    has_series = series_next >= 0
    rows[has_series, 0] = series_next[has_series]
    cosine = np.einsum("nd,nkd->nk", latent, latent[rows])
    weights = np.exp(config.neighbour_similarity * cosine)
    weights /= weights.sum(axis=1, keepdims=True)
    tail = weights[has_series, 1:]
    tail *= (1.0 - config.series_weight) / tail.sum(axis=1, keepdims=True)
    weights[has_series] = np.concatenate(
        (np.full((int(has_series.sum()), 1), config.series_weight), tail), axis=1
    )
    return rows, np.log(weights)
