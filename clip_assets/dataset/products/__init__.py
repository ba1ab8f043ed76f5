"""The derived products of a curated dataset, one module each, `PRODUCTS` the one list.

A product is data (`DerivedProduct`: its outputs, what it reads, its build, its checks, its settings,
its figures for the summary); the Dagster layer makes every product's asset, checks, run config and
place in the jobs from this list, as it makes the families' from `clip_assets.families.FAMILIES`. A
new derived table is a module here with `PRODUCT = DerivedProduct(...)` and a line below.
"""

from clip_assets.dataset.products import clip_gallery, clip_tables, dataset_summary, near_duplicates, training_shards
from clip_assets.dataset.products.base import (
    OUTPUT_FAMILIES,
    Built,
    Checked,
    DerivedProduct,
    ProductCheck,
    ProductOutput,
    ProductRun,
)

# In the order they are built: each reads what the ones before it wrote.
PRODUCTS: tuple[DerivedProduct, ...] = (
    clip_tables.PRODUCT,
    near_duplicates.PRODUCT,
    training_shards.PRODUCT,
    clip_gallery.PRODUCT,
    dataset_summary.PRODUCT,
)

__all__ = [
    "OUTPUT_FAMILIES",
    "PRODUCTS",
    "Built",
    "Checked",
    "DerivedProduct",
    "ProductCheck",
    "ProductOutput",
    "ProductRun",
]
