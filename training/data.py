"""Interaction data loaders: P5 dataset folders and generic CSV/TSV/Parquet interaction logs."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, cast

from model_store.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "InteractionData",
    "find_data_file",
    "load_data",
    "load_interactions_file",
    "load_p5_folder",
    "read_lines",
    "read_text",
]

_GZIP_MAGIC = b"\x1f\x8b"
# A P5 line: decimal ids separated by spaces or tabs (nothing else, no signs).
_P5_LINE = re.compile(r"[0-9]+(?:[ \t]+[0-9]+)*")
_P5_TOKEN = re.compile(r"[0-9]+")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SEP_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".inter": "\t"}  # .inter: RecBole atomic file
# Leave-one-out needs a train, a validation and a test item.
MIN_SEQUENCE_LENGTH = 3


@dataclass
class InteractionData:
    """Users' interaction sequences in dense indices, with the external ids kept aside."""

    name: str  # dataset name ("beauty", or the file stem)
    user_ids: list[str]  # external id of user u (dense index u)
    item_ids: list[str]  # external id of item i (dense index i)
    sequences: list[list[int]]  # per user, dense item indices in time order
    negatives: list[list[int]] | None  # per user, dense item indices (P5 file), or None
    p5_user_numbers: list[int] | None  # P5's numeric user id per user (P5 folders), else None
    p5_item_numbers: list[int] | None  # P5's numeric item id per item (P5 folders), else None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)


def _error(path: Path | str, line: int | None, problem: str, unit: str = "line") -> DataError:
    where = f"{path}" if line is None else f"{path}, {unit} {line}"
    return DataError(f"{where}: {problem}")


# ---------------------------------------------------------------------------------------------
# Reading (optionally gzip-compressed) text files
# ---------------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """Return the UTF-8 text of ``path``, decompressing it first when it is gzip data."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file: {e}") from e
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data: {e}") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise _error(path, line, f"not valid UTF-8 ({e.reason})") from e


def read_lines(path: Path) -> list[str]:
    """Lines of a text file (plain or gzip), without line endings; a final newline ends the last line."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def find_data_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz`` (the plain file wins when both exist), else None."""
    plain = folder / name
    if plain.is_file():
        return plain
    packed = folder / f"{name}.gz"
    if packed.is_file():
        return packed
    return None


# ---------------------------------------------------------------------------------------------
# P5 folders
# ---------------------------------------------------------------------------------------------


def _p5_numbers(path: Path, line_no: int, line: str) -> list[int]:
    if not line.strip():
        raise _error(path, line_no, "empty line")
    stripped = line.strip()
    if _P5_LINE.fullmatch(stripped) is None:
        for tok in stripped.split():
            if _P5_TOKEN.fullmatch(tok) is None:
                raise _error(path, line_no, f"id {tok!r} is not a non-negative integer")
        raise _error(path, line_no, "ids must be separated by spaces or tabs")
    return list(map(int, stripped.split()))


def _parse_sequences(path: Path) -> tuple[list[int], list[list[int]]]:
    users: list[int] = []
    seqs: list[list[int]] = []
    seen: dict[int, int] = {}
    for line_no, line in enumerate(read_lines(path), start=1):
        nums = _p5_numbers(path, line_no, line)
        user, items = nums[0], nums[1:]
        if user in seen:
            raise _error(path, line_no, f"duplicate line for user {user} (first at line {seen[user]})")
        if len(items) < MIN_SEQUENCE_LENGTH:
            raise _error(
                path,
                line_no,
                f"user {user} has {len(items)} item(s); leave-one-out needs at least {MIN_SEQUENCE_LENGTH}",
            )
        seen[user] = line_no
        users.append(user)
        seqs.append(items)
    if not users:
        raise DataError(f"{path}: no users (the file is empty)")
    return users, seqs


def _load_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _error(path, e.lineno, f"invalid JSON: {e.msg}") from e


def _external_ids(
    maps_path: Path,
    maps: Any,
    key: str,
    numbers: list[int],
    lines: list[int],
    seq_path: Path,
    what: str,
) -> list[str]:
    if not isinstance(maps, dict) or not isinstance(maps.get(key), dict):
        raise DataError(f"{maps_path}: expected a JSON object with an object {key!r} (P5/POD datamaps)")
    table: dict[str, Any] = maps[key]
    out: list[str] = []
    first: dict[str, int] = {}
    for num, line_no in zip(numbers, lines, strict=True):
        ext = table.get(str(num))
        if ext is None:
            raise DataError(
                f"{maps_path}: {key} has no entry for {what} {num} (used at {seq_path.name} line {line_no})"
            )
        if not isinstance(ext, str) or not ext:
            raise DataError(f"{maps_path}: {key}[{str(num)!r}] is not a non-empty string: {ext!r}")
        if ext in first and first[ext] != num:
            raise DataError(f"{maps_path}: {key} maps both {first[ext]} and {num} to {ext!r}")
        first[ext] = num
        out.append(ext)
    return out


def _parse_negatives(
    path: Path,
    user_index: dict[int, int],
    item_index: dict[int, int],
    sequences: list[list[int]],
    user_numbers: list[int],
) -> list[list[int]]:
    negatives: list[list[int] | None] = [None] * len(user_index)
    seen: dict[int, int] = {}
    for line_no, line in enumerate(read_lines(path), start=1):
        nums = _p5_numbers(path, line_no, line)
        user, negs = nums[0], nums[1:]
        u = user_index.get(user)
        if u is None:
            raise _error(path, line_no, f"negatives for unknown user {user} (not in sequential_data)")
        if user in seen:
            raise _error(path, line_no, f"duplicate line for user {user} (first at line {seen[user]})")
        if not negs:
            raise _error(path, line_no, f"user {user} has no negatives")
        seen[user] = line_no
        found = list(map(item_index.get, negs))
        if None in found:
            unknown = negs[found.index(None)]
            raise _error(path, line_no, f"negative item {unknown} is not an item of sequential_data")
        dense = cast(list[int], found)
        history = set(sequences[u])
        if not history.isdisjoint(dense):
            bad = next(n for n, i in zip(negs, dense, strict=True) if i in history)
            raise _error(path, line_no, f"negative item {bad} is in user {user}'s history")
        negatives[u] = dense
    out: list[list[int]] = []
    for u, negs_u in enumerate(negatives):
        if negs_u is None:
            raise DataError(f"{path}: no line for user {user_numbers[u]}")
        out.append(negs_u)
    return out


def load_p5_folder(path: Path) -> InteractionData:
    """Load a P5-format folder (sequential_data.txt [+ negative_samples.txt, datamaps.json], each may be .gz).

    Users keep file order; items are numbered in order of first appearance walking the lines.
    With a datamaps file the external ids are P5's reviewer ids / ASINs, otherwise P5's id strings.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    seq_path = find_data_file(folder, "sequential_data.txt")
    if seq_path is None:
        raise DataError(f"{folder}: no sequential_data.txt or sequential_data.txt.gz")
    user_numbers, raw_seqs = _parse_sequences(seq_path)

    item_index: dict[int, int] = {}
    item_numbers: list[int] = []
    item_lines: list[int] = []
    sequences: list[list[int]] = []
    for line_no, seq in enumerate(raw_seqs, start=1):
        dense: list[int] = []
        for n in seq:
            i = item_index.get(n)
            if i is None:
                i = len(item_numbers)
                item_index[n] = i
                item_numbers.append(n)
                item_lines.append(line_no)
            dense.append(i)
        sequences.append(dense)
    user_index = {n: u for u, n in enumerate(user_numbers)}
    user_lines = list(range(1, len(user_numbers) + 1))

    maps_path = find_data_file(folder, "datamaps.json")
    if maps_path is not None:
        maps = _load_json(maps_path)
        user_ids = _external_ids(maps_path, maps, "id2user", user_numbers, user_lines, seq_path, "user")
        item_ids = _external_ids(maps_path, maps, "id2item", item_numbers, item_lines, seq_path, "item")
    else:
        user_ids = [str(n) for n in user_numbers]
        item_ids = [str(n) for n in item_numbers]

    neg_path = find_data_file(folder, "negative_samples.txt")
    negatives = (
        None
        if neg_path is None
        else _parse_negatives(neg_path, user_index, item_index, sequences, user_numbers)
    )
    return InteractionData(
        name=folder.resolve().name,
        user_ids=user_ids,
        item_ids=item_ids,
        sequences=sequences,
        negatives=negatives,
        p5_user_numbers=user_numbers,
        p5_item_numbers=item_numbers,
    )


# ---------------------------------------------------------------------------------------------
# Generic interaction files (CSV / TSV / Parquet)
# ---------------------------------------------------------------------------------------------

_Row = tuple[str, str, float | int, int]  # user, item, time key, line (or row) number


def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def _parse_time(value: Any) -> float | int:
    """A sortable number for a timestamp cell: int/float seconds as given, ISO dates as epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("boolean is not a timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return dt.timestamp()
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC).timestamp()
    if hasattr(value, "timestamp"):  # pandas.Timestamp and friends
        return float(value.timestamp())
    if not isinstance(value, str):
        raise ValueError(f"unsupported type {type(value).__name__}")
    return _parse_time_text(value.strip())


def _parse_time_text(s: str) -> float | int:
    """A timestamp written as text: integer or float seconds, or an ISO date / datetime."""
    if not s:
        raise ValueError("empty")
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(f):
            raise ValueError("not a finite number")
        return f
    return _parse_time(datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s))


@dataclass(frozen=True)
class _Role:
    """One column the loader needs: what it is, the option that names it, the names it recognises."""

    what: str  # "user", "item", "timestamp"
    option: str  # keyword argument of load_interactions_file (the CLI flag is --user-col etc.)
    names: tuple[str, ...]  # usual header names, as usually spelled

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")


_ROLES = (
    _Role("user", "user_col", ("user", "user_id", "userId", "uid", "reviewerID")),
    _Role("item", "item_col", ("item", "item_id", "itemId", "movieId", "asin", "product_id")),
    _Role("timestamp", "time_col", ("timestamp", "time", "ts", "unixReviewTime", "datetime", "date")),
)
# RecBole atomic files name a column "field:type" (user_id:token, timestamp:float).
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def _base_name(header_name: str) -> str:
    """A header name without a RecBole type suffix (``user_id:token`` -> ``user_id``)."""
    base, colon, kind = header_name.rpartition(":")
    return base if colon and base and kind in _RECBOLE_TYPES else header_name


def _spelling_key(name: str) -> str:
    """user_id, userId, USER_ID and user_id:token all read as one name."""
    return _base_name(name).lower().replace("_", "")


def _pick_column(path: Path, unit_line: int | None, header: list[str], role: _Role, given: str | None) -> str:
    """The header name taken for ``role``: ``given`` (exactly, or without a RecBole type), else recognised."""
    available = ", ".join(map(repr, header))
    if given is not None:
        exact = [h for h in header if h == given] or [h for h in header if _base_name(h) == given]
        if not exact:
            raise _error(path, unit_line, f"no column {given!r}; available columns: {available}")
        if len(exact) > 1:
            raise _error(path, unit_line, f"column {given!r} appears {len(exact)} times in the header")
        return exact[0]
    keys = {_spelling_key(n) for n in role.names}
    found = [h for h in header if _spelling_key(h) in keys]
    if len(found) == 1:
        return found[0]
    if found:
        raise _error(
            path,
            unit_line,
            f"ambiguous {role.what} column: {', '.join(map(repr, found))} all look like one; "
            f"choose with {role.option}= ({role.flag})",
        )
    hint = f"name it with {role.option}= ({role.flag})"
    if role.option == "time_col":
        hint += ", or pass file_order=True (--file-order) when rows are already in time order"
    raise _error(
        path,
        unit_line,
        f"no {role.what} column: none of the columns ({available}) has a recognised name "
        f"({', '.join(role.names)}); {hint}",
    )


_ColumnPicker = Callable[[list[str], int | None], list[str]]


def _column_picker(
    path: Path, user_col: str | None, item_col: str | None, time_col: str | None, file_order: bool
) -> _ColumnPicker:
    """A function from a header to the header names of (user, item[, timestamp]) that logs its choice."""
    given = (user_col, item_col, time_col)
    roles = _ROLES[:2] if file_order else _ROLES

    def pick(header: list[str], unit_line: int | None) -> list[str]:
        cols = [_pick_column(path, unit_line, header, r, g) for r, g in zip(roles, given, strict=False)]
        if len(set(cols)) != len(cols):
            raise _error(
                path,
                unit_line,
                "one column taken for two roles: "
                + ", ".join(f"{r.what}={c!r}" for r, c in zip(roles, cols, strict=True)),
            )
        logger.info(
            "%s: columns %s%s",
            path,
            ", ".join(
                f"{r.what}={c!r} ({'given' if g is not None else 'recognised'})"
                for r, g, c in zip(roles, given, cols, strict=False)
            ),
            "; no timestamp column, file order is the time order" if file_order else "",
        )
        return cols

    return pick


_Rows = Iterator[tuple[list[Any], int]]  # (the taken columns' cells, line or row number) per data row


def _read_delimited(path: Path, sep: str, pick: _ColumnPicker) -> tuple[list[str], _Rows]:
    """The header names taken by ``pick`` and an iterator over the data rows' cells of those columns."""
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (no header line)") from None
    except csv.Error as e:
        raise _error(path, 1, f"cannot parse header: {e}") from e
    header = [h.strip() for h in header]
    cols = pick(header, 1)
    idx = [header.index(c) for c in cols]

    def rows() -> _Rows:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise _error(path, reader.line_num, f"cannot parse: {e}") from e
            line_no = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                raise _error(path, line_no, "empty line")
            if len(row) != len(header):
                raise _error(
                    path, line_no, f"expected {len(header)} fields (as in the header), found {len(row)}"
                )
            yield [row[i] for i in idx], line_no

    return cols, rows()


def _read_parquet(path: Path, pick: _ColumnPicker) -> tuple[list[str], _Rows]:
    """As ``_read_delimited``, for a Parquet file (row numbers instead of line numbers)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading Parquet files needs pyarrow (pip install pyarrow)") from e
    try:
        names = list(pq.read_schema(path).names)
    except Exception as e:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"{path}: cannot read Parquet file: {e}") from e
    cols = pick(names, None)
    try:
        table = pq.read_table(path, columns=cols)
    except Exception as e:
        raise DataError(f"{path}: cannot read Parquet file: {e}") from e
    columns = [table.column(c).to_pylist() for c in cols]
    return cols, ((list(values), r) for r, values in enumerate(zip(*columns, strict=True), start=1))


def _id_cell(path: Path, line_no: int, unit: str, value: Any, what: str) -> str:
    if value is None:
        raise _error(path, line_no, f"missing {what}", unit)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    s = str(value).strip()
    if not s:
        raise _error(path, line_no, f"empty {what}", unit)
    return s


def _k_core(seqs: dict[str, list[str]], k_core: int) -> tuple[dict[str, list[str]], int, int]:
    """Iteratively drop items with < k_core and users with < max(k_core, 3) interactions.

    Returns the filtered sequences, how many users were dropped in all and how many of those had
    fewer than 3 interactions when dropped.
    """
    user_min = max(k_core, MIN_SEQUENCE_LENGTH)
    dropped_users = 0
    dropped_short = 0
    while True:
        changed = False
        if k_core > 1:
            counts = Counter(i for s in seqs.values() for i in s)
            rare = {i for i, c in counts.items() if c < k_core}
            if rare:
                changed = True
                seqs = {u: [i for i in s if i not in rare] for u, s in seqs.items()}
        short = [u for u, s in seqs.items() if len(s) < user_min]
        if short:
            changed = True
            dropped_users += len(short)
            dropped_short += sum(1 for u in short if len(seqs[u]) < MIN_SEQUENCE_LENGTH)
            short_set = set(short)
            seqs = {u: s for u, s in seqs.items() if u not in short_set}
        if not changed:
            return seqs, dropped_users, dropped_short


def _rows(path: Path, suffix: str, sep: str | None, pick: _ColumnPicker) -> tuple[list[str], _Rows, str]:
    """The columns taken, the wanted cells of every row of a Parquet or delimited file with its number,
    and the unit of that number ("row" / "line")."""
    if sep is None and suffix in _PARQUET_SUFFIXES:
        cols, rows = _read_parquet(path, pick)
        return cols, rows, "row"
    if sep is None:
        if suffix not in _SEP_BY_SUFFIX:
            raise DataError(
                f"{path}: cannot infer the separator from the extension {suffix!r}; pass sep "
                "(.csv, .tsv, .txt, .inter and .parquet are recognised)"
            )
        sep = _SEP_BY_SUFFIX[suffix]
    cols, rows = _read_delimited(path, sep, pick)
    return cols, rows, "line"


def _time_ordered(
    path: Path, rows: _Rows, unit: str, cols: list[str], file_order: bool
) -> dict[str, list[str]]:
    """Per user (first-appearance order), the items sorted by time (stably: ties keep file order)."""
    per_user: dict[str, list[tuple[float | int, str]]] = {}
    n_rows = 0
    for values, line_no in rows:
        user = _id_cell(path, line_no, unit, values[0], f"user id (column {cols[0]!r})")
        item = _id_cell(path, line_no, unit, values[1], f"item id (column {cols[1]!r})")
        if file_order:
            t: float | int = n_rows
        else:
            try:
                t = _parse_time(values[2])
            except (ValueError, TypeError, OverflowError) as e:
                raise _error(
                    path, line_no, f"unparsable timestamp {values[2]!r} in column {cols[2]!r} ({e})", unit
                ) from e
        per_user.setdefault(user, []).append((t, item))
        n_rows += 1
    if n_rows == 0:
        raise DataError(f"{path}: no interactions (only a header)")
    return {user: [item for _, item in sorted(events, key=lambda e: e[0])]
            for user, events in per_user.items()}


def load_interactions_file(
    path: Path,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    sep: str | None = None,
    k_core: int = 0,
    file_order: bool = False,
) -> InteractionData:
    """Load a CSV/TSV (optionally gzip), RecBole ``.inter`` or Parquet log, one row per interaction.

    Columns left as None are recognised from the header by their usual names (user, user_id, userId,
    uid, reviewerID / item, item_id, itemId, movieId, asin, product_id / timestamp, time, ts,
    unixReviewTime, datetime, date; any case, with or without underscores or a RecBole ``:type``
    suffix); two recognised candidates for one column are an error, and the choice is logged. A
    given name is an override (matched exactly, or without its RecBole type). Timestamps are
    numbers or ISO dates. Each user's interactions are sorted by the timestamp (stably, so ties
    keep file order); ``file_order=True`` means there is no timestamp column and file order is the
    time order. ``k_core`` > 0 iteratively keeps users and items with at least ``k_core``
    interactions; users with fewer than 3 interactions are always dropped (leave-one-out needs
    train, validation and test items) and counted in a log message.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if k_core < 0:
        raise ValueError(f"k_core must be >= 0, got {k_core}")
    if file_order and time_col is not None:
        raise ValueError(f"file_order=True means no timestamp column, but time_col={time_col!r} was given")
    base = _strip_gz(path.name)
    suffix = Path(base).suffix.lower()
    pick = _column_picker(path, user_col, item_col, time_col, file_order)

    cols, rows, unit = _rows(path, suffix, sep, pick)
    seqs = _time_ordered(path, rows, unit, cols, file_order)
    n_users_before = len(seqs)
    n_items_before = len({i for s in seqs.values() for i in s})

    seqs, dropped, dropped_short = _k_core(seqs, k_core)
    if dropped:
        logger.info(
            "%s: dropped %d of %d users (k_core=%d; %d had fewer than %d interactions, "
            "too few for leave-one-out)",
            path,
            dropped,
            n_users_before,
            k_core,
            dropped_short,
            MIN_SEQUENCE_LENGTH,
        )
    if not seqs:
        raise DataError(
            f"{path}: no user has at least {max(k_core, MIN_SEQUENCE_LENGTH)} interactions after filtering"
        )

    item_index: dict[str, int] = {}
    sequences: list[list[int]] = []
    for s in seqs.values():
        sequences.append([item_index.setdefault(i, len(item_index)) for i in s])
    if len(item_index) < n_items_before:
        logger.info("%s: kept %d of %d items", path, len(item_index), n_items_before)
    return InteractionData(
        name=Path(base).stem,
        user_ids=list(seqs),
        item_ids=list(item_index),
        sequences=sequences,
        negatives=None,
        p5_user_numbers=None,
        p5_item_numbers=None,
    )


def load_data(path: Path, **kwargs: Any) -> InteractionData:
    """A folder is read as a P5 folder (no options), a file as a generic interaction file."""
    path = Path(path)
    if path.is_dir():
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} apply to interaction files, not P5 folders")
        return load_p5_folder(path)
    if path.is_file():
        return load_interactions_file(path, **kwargs)
    raise DataError(f"{path}: no such file or directory")


def subset_users(data: InteractionData, n: int) -> InteractionData:
    """The first n users in file order, items re-indexed by first appearance; negatives regenerated."""
    if n < 1:
        raise DataError(f"--limit-users must be >= 1, got {n}")
    keep = data.sequences[:n]
    mapping: dict[int, int] = {}
    for seq in keep:
        for item in seq:
            mapping.setdefault(item, len(mapping))
    old = list(mapping)
    return InteractionData(
        name=data.name,
        user_ids=data.user_ids[:n],
        item_ids=[data.item_ids[i] for i in old],
        sequences=[[mapping[i] for i in seq] for seq in keep],
        negatives=None,
        p5_user_numbers=data.p5_user_numbers[:n] if data.p5_user_numbers else None,
        p5_item_numbers=[data.p5_item_numbers[i] for i in old] if data.p5_item_numbers else None,
    )
