"""Id codec: external ids <-> dense indices <-> the token numbers written in prompts (``item_<n>``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from model_store.errors import BundleError, DataError

__all__ = ["SCHEMES", "IdCodec", "UnknownIdError"]

SCHEMES = ("shuffled", "p5", "graph")
_FORMAT = "elmrec-id-codec"
_VERSION = 1
_ITEM_TOKEN = re.compile(r"item_([0-9]+)")
_USER_TOKEN = re.compile(r"user_([0-9]+)")


class UnknownIdError(DataError, KeyError):
    """An external id, token number or token that the codec does not know (a DataError and a KeyError)."""

    def __init__(self, message: str, ids: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.ids = list(ids)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _check_ids(ids: Sequence[str], what: str) -> list[str]:
    out = list(ids)
    seen: dict[str, int] = {}
    for i, ext in enumerate(out):
        if not isinstance(ext, str) or not ext:
            raise DataError(f"{what} id #{i} is not a non-empty string: {ext!r}")
        if ext in seen:
            raise DataError(f"{what} id {ext!r} appears twice (#{seen[ext]} and #{i})")
        seen[ext] = i
    return out


def _check_numbers(numbers: Iterable[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(list(numbers) if not isinstance(numbers, np.ndarray) else numbers)
    if arr.shape != (n,):
        raise DataError(f"{what} numbers: expected {n} numbers, got shape {arr.shape}")
    if n and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what} numbers must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and int(arr.min()) < 0:
        raise DataError(f"{what} numbers must be >= 0, got {int(arr.min())}")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != n:
        raise DataError(f"{what} number {int(uniq[counts > 1][0])} is used twice")
    return arr


class IdCodec:
    """Bijections external id <-> dense index <-> token number, for users and for items.

    ``users[u]`` / ``items[i]`` are the external ids of dense index u / i; ``user_numbers[u]`` /
    ``item_numbers[i]`` are the numbers written in prompts (``user_<n>``, ``item_<n>``).
    ``scheme`` is ``"shuffled"`` (items numbered by a seeded permutation of 1..n_items, so the
    number leaks nothing about when an item was first seen), ``"p5"`` (P5's own numbers) or
    ``"graph"`` (numbers chosen from the TRAINING graph so that neighbours share id-token prefixes:
    ``training.id_order``).
    """

    def __init__(
        self,
        users: Sequence[str],
        items: Sequence[str],
        user_numbers: Iterable[int] | np.ndarray,
        item_numbers: Iterable[int] | np.ndarray,
        scheme: str,
        seed: int | None = None,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown id scheme {scheme!r}; expected one of {SCHEMES}")
        self.users: list[str] = _check_ids(users, "user")
        self.items: list[str] = _check_ids(items, "item")
        self.user_numbers: np.ndarray = _check_numbers(user_numbers, len(self.users), "user")
        self.item_numbers: np.ndarray = _check_numbers(item_numbers, len(self.items), "item")
        self.scheme: str = scheme
        self.seed: int | None = seed
        self._user_index = {ext: u for u, ext in enumerate(self.users)}
        self._item_index = {ext: i for i, ext in enumerate(self.items)}
        self._user_by_number = {int(n): u for u, n in enumerate(self.user_numbers.tolist())}
        self._item_by_number = {int(n): i for i, n in enumerate(self.item_numbers.tolist())}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        scheme: str = "shuffled",
        seed: int = 0,
        p5_user_numbers: Sequence[int] | None = None,
        p5_item_numbers: Sequence[int] | None = None,
        graph_item_numbers: Sequence[int] | np.ndarray | None = None,
    ) -> IdCodec:
        """Number users and items.

        ``"shuffled"``: items get ``numpy.random.default_rng(seed).permutation(n_items) + 1``;
        users keep P5's numbers when given, else 1..n_users in dense (file) order.
        ``"p5"``: P5's numbers for both, falling back to 1..n in dense order when there are none.
        ``"graph"``: items get ``graph_item_numbers`` (required), users as for ``"shuffled"``.
        """
        n_users, n_items = len(user_ids), len(item_ids)
        user_numbers: Sequence[int] | np.ndarray = (
            p5_user_numbers if p5_user_numbers is not None else np.arange(1, n_users + 1, dtype=np.int64)
        )
        if scheme == "shuffled":
            item_numbers: Sequence[int] | np.ndarray = (
                np.random.default_rng(seed).permutation(n_items).astype(np.int64) + 1
            )
        elif scheme == "p5":
            item_numbers = (
                p5_item_numbers if p5_item_numbers is not None else np.arange(1, n_items + 1, dtype=np.int64)
            )
        elif scheme == "graph":
            if graph_item_numbers is None:
                raise ValueError("the graph id scheme needs graph_item_numbers (training.id_order)")
            item_numbers = graph_item_numbers
        else:
            raise ValueError(f"unknown id scheme {scheme!r}; expected one of {SCHEMES}")
        used_seed = seed if scheme == "shuffled" else None
        return cls(user_ids, item_ids, user_numbers, item_numbers, scheme, used_seed)

    # -- sizes --------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    # -- external id -> dense index -----------------------------------------------------------

    def find_user(self, ext: str) -> int | None:
        return self._user_index.get(ext)

    def find_item(self, ext: str) -> int | None:
        return self._item_index.get(ext)

    def user_index(self, ext: str) -> int:
        u = self._user_index.get(ext)
        if u is None:
            raise UnknownIdError(f"unknown user id {ext!r}", [ext])
        return u

    def item_index(self, ext: str) -> int:
        i = self._item_index.get(ext)
        if i is None:
            raise UnknownIdError(f"unknown item id {ext!r}", [ext])
        return i

    @staticmethod
    def _lookup(table: dict[str, int], ids: Iterable[str]) -> tuple[list[int], list[str]]:
        found: list[int] = []
        unknown: list[str] = []
        for ext in ids:
            i = table.get(ext) if isinstance(ext, str) else None
            if i is None:
                if ext not in unknown:
                    unknown.append(ext)
            else:
                found.append(i)
        return found, unknown

    def index_of_items(self, ids: Iterable[str]) -> tuple[list[int], list[str]]:
        """(dense indices of the known ids, in input order; the unknown ids, deduplicated, in order)."""
        return self._lookup(self._item_index, ids)

    def index_of_users(self, ids: Iterable[str]) -> tuple[list[int], list[str]]:
        """(dense indices of the known ids, in input order; the unknown ids, deduplicated, in order)."""
        return self._lookup(self._user_index, ids)

    # -- dense index -> token ----------------------------------------------------------------

    def _check_index(self, i: int, n: int, what: str) -> int:
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= int(i) < n:
            raise IndexError(f"{what} index {i!r} out of range 0..{n - 1}")
        return int(i)

    def user_number(self, u: int) -> int:
        return int(self.user_numbers[self._check_index(u, self.n_users, "user")])

    def item_number(self, i: int) -> int:
        return int(self.item_numbers[self._check_index(i, self.n_items, "item")])

    def user_token(self, u: int) -> str:
        return f"user_{self.user_number(u)}"

    def item_token(self, i: int) -> str:
        return f"item_{self.item_number(i)}"

    # -- token number / token -> dense index ---------------------------------------------------

    def user_from_number(self, n: int) -> int:
        u = self._user_by_number.get(int(n))
        if u is None:
            raise UnknownIdError(f"no user has token number {n}", [n])
        return u

    def item_from_number(self, n: int) -> int:
        i = self._item_by_number.get(int(n))
        if i is None:
            raise UnknownIdError(f"no item has token number {n}", [n])
        return i

    def parse_item_token(self, token: str) -> int | None:
        """Dense index of ``item_<n>`` (surrounding spaces ignored), or None if it names no item."""
        m = _ITEM_TOKEN.fullmatch(token.strip())
        return None if m is None else self._item_by_number.get(int(m.group(1)))

    def parse_user_token(self, token: str) -> int | None:
        """Dense index of ``user_<n>`` (surrounding spaces ignored), or None if it names no user."""
        m = _USER_TOKEN.fullmatch(token.strip())
        return None if m is None else self._user_by_number.get(int(m.group(1)))

    # -- serialisation --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists of str / int)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "scheme": self.scheme,
            "seed": self.seed,
            "users": list(self.users),
            "items": list(self.items),
            "user_numbers": [int(n) for n in self.user_numbers.tolist()],
            "item_numbers": [int(n) for n in self.item_numbers.tolist()],
        }

    @classmethod
    def from_json(cls, d: Any) -> IdCodec:
        """Inverse of :meth:`to_json`; a malformed document raises BundleError."""
        if not isinstance(d, dict):
            raise BundleError(f"id codec: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != _FORMAT or d.get("version") != _VERSION:
            raise BundleError(
                f"id codec: unsupported format {d.get('format')!r} version {d.get('version')!r} "
                f"(expected {_FORMAT!r} version {_VERSION})"
            )
        missing = [k for k in ("scheme", "users", "items", "user_numbers", "item_numbers") if k not in d]
        if missing:
            raise BundleError(f"id codec: missing keys {missing}")
        for key in ("users", "items", "user_numbers", "item_numbers"):
            if not isinstance(d[key], list):
                raise BundleError(f"id codec: {key!r} must be a list")
        for key in ("user_numbers", "item_numbers"):
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in d[key]):
                raise BundleError(f"id codec: {key!r} must hold integers")
        seed = d.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise BundleError(f"id codec: seed must be an integer or null, got {seed!r}")
        try:
            return cls(
                d["users"],
                d["items"],
                np.asarray(d["user_numbers"], dtype=np.int64),
                np.asarray(d["item_numbers"], dtype=np.int64),
                d["scheme"],
                seed,
            )
        except (DataError, ValueError) as e:
            raise BundleError(f"id codec: {e}") from e

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdCodec):
            return NotImplemented
        return (
            self.scheme == other.scheme
            and self.users == other.users
            and self.items == other.items
            and np.array_equal(self.user_numbers, other.user_numbers)
            and np.array_equal(self.item_numbers, other.item_numbers)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdCodec(scheme={self.scheme!r}, n_users={self.n_users}, n_items={self.n_items})"
