"""Host round trips, probes and ACME orders in threads, each failure kept in its place:
one host or order that fails never stops the others."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from ..errors import ProvisionerError

HOST_PARALLEL = 16  # host round trips and HTTP probes at once
T = TypeVar("T")


def parallel(func: Callable[[Any], T], items: Sequence[Any],
             workers: int = HOST_PARALLEL) -> list[T | ProvisionerError]:
    """``func`` over items in threads; a ProvisionerError is returned in its place."""
    def safe(item: Any) -> T | ProvisionerError:
        try:
            return func(item)
        except ProvisionerError as exc:
            return exc

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(len(items), workers)) as pool:
        return list(pool.map(safe, items))
