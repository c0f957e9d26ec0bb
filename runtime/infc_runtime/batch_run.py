"""`python -m infc_runtime run BUNDLE_DIR INPUT -o OUTPUT`: run a bundle over a file, without a server.

The bundle is loaded as the server loads it (`serve.load_bundle`: its files
verified against the manifest before any of it is imported, the signature
checked with `--public-key`), and its requests run through the server's
`Pipeline.run_batch` at the bundle's `serving.max_batch_size`, on its sessions
(`serving.instances`, each with its share of the compute threads) while this
thread reads and decodes the next batch; the pipeline is warmed up first, as
the server's, and lines that concatenate run as one request (a failing one
again line by line).

INPUT is one of:

- JSON lines (`.jsonl`, `.ndjson`, `.json` or any other file): each line one
  request in a form of `infc_runtime.lines` (a V2 request, a raw record for a
  bundle with one BYTES input, or one row naming the inputs); blank lines are
  skipped;
- CSV (`.csv`), for a bundle with one BYTES input of JSON rows (tabular): the
  header row names the fields; each value becomes a JSON integer, number,
  `true`/`false` or string, an empty one `null` (missing);
- a directory of files (images, for a bundle whose one BYTES input is
  decoded): the files in sorted order; line N is the N-th file, named in
  `file`.

OUTPUT holds one JSON line per input line, in input order: `{"line": N,
"outputs": {NAME: value}}` (`"id"` when a V2 request line had one, `"file"`
for a directory), or `{"line": N, "error": "..."}` for a line that failed
(bad JSON, a field the model does not take, a non-finite output). A failing
batch is run again one line at a time, so a bad line never fails its
batch-mates. Lines are numbered from 1 as in an editor (a CSV's header is
line 1). An OUTPUT ending in `.parquet` is written as Parquet (needs pyarrow)
when the run ends, from `OUTPUT.partial.jsonl`, kept while it runs.

Resumable: when OUTPUT (or its partial file) exists, the lines it holds are
kept and the run goes on after the last of them; a last line cut short by an
interruption is dropped first (OUTPUT is flushed every `FLUSH_EVERY_S`). A file
that is not a run's output is refused, never overwritten. Every read is bounded: a line (or CSV record,
or file) over `--max-line-bytes` (default `serving.max_body_bytes`) is an
error line, a directory of more than `--max-files` files is refused, V2
requests are held to the server's `max_rows` and `max_elements`, images to
`max_pixels`.

Exit codes: 0 every line answered; 2 usage, or the bundle, INPUT or OUTPUT is
unusable (one line on stderr, before any line runs); 3 the bundle needs an
execution provider this host lacks; 4 some lines failed (their error lines are
in OUTPUT; the count is on stderr); 130 interrupted (re-run to resume).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import _json
from ._tensors import ProtocolError
from .bundle_options import NO_VERIFY_WITH_KEY, add_bundle_options
from .lines import Line, decode_line, named_rows, raw_input
from .pipeline import Pipeline
from .providers import ProviderError, allow_cpu_fallback_env
from .types import Tensors
from .verify import BundleError

__all__ = ["EXIT_LINES_FAILED", "add_options", "run"]

EXIT_OK, EXIT_USAGE, EXIT_NO_PROVIDER, EXIT_LINES_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
MAX_FILES = 1_000_000
"""Files a directory INPUT may hold (their names are sorted in memory)."""
PROGRESS_EVERY_S = 5.0
PARTIAL = ".partial.jsonl"
FLUSH_EVERY_S = 0.5
"""OUTPUT is flushed at least this often (and when the run ends or is interrupted)."""


class _Unusable(Exception):
    """INPUT or OUTPUT cannot be used (exit 2)."""


class _WarmUpFailed(Exception):
    """The bundle failed its warm-up (exit 2)."""


@dataclass
class _Item:
    """One input line: its number, file name, and its decoded request or the reason it has none."""

    line: int
    file: str | None = None
    request: Line | None = None
    error: str | None = None


_Result = dict[str, Any] | Exception
"""A line's outputs as JSON values (name -> value), or why it failed."""


def add_options(parser: argparse.ArgumentParser, *, bundle: bool = True) -> None:
    """The `run` command's arguments (`bundle`: with the bundle directory first; a bundle's serve.py knows it)."""
    if bundle:
        parser.add_argument("bundle_dir", metavar="BUNDLE_DIR", help="the bundle directory (holds manifest.json)")
    parser.add_argument("input", metavar="INPUT", help="JSON lines, a .csv file (tabular), or a folder of images")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="JSON lines (resumed when it exists), or .parquet (needs pyarrow)")
    parser.add_argument("--max-line-bytes", type=int, default=None, metavar="N",
                        help="longest line, CSV record or file (default: the bundle's serving.max_body_bytes)")
    parser.add_argument("--max-files", type=int, default=MAX_FILES, metavar="N",
                        help="most files a folder INPUT may hold (default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_bundle_options(parser, verb="run", exits=f"exits {EXIT_NO_PROVIDER}")


def run(args: argparse.Namespace, load_bundle: Callable[..., Pipeline]) -> int:
    """Run the parsed `run` command; return the exit code. `load_bundle`: `serve.load_bundle`."""
    if args.public_key is not None and args.no_verify:
        return _fail(NO_VERIFY_WITH_KEY)
    try:
        fallback = args.allow_cpu_fallback or allow_cpu_fallback_env()
        source, output = Path(args.input), Path(args.output)
        _check_paths(source, output)
        writer = _Writer(output)  # before the bundle loads: an OUTPUT that cannot be resumed costs nothing
        pipeline = load_bundle(args.bundle_dir, verify=not args.no_verify, public_key=args.public_key,
                               allow_cpu_fallback=fallback)
        max_bytes = args.max_line_bytes or pipeline.serving.max_body_bytes
        items = _items(source, pipeline, max_bytes=max_bytes, max_files=args.max_files)
    except (BundleError, _Unusable, ValueError) as exc:
        return _fail(exc)
    except ProviderError as exc:
        return _fail(f"{args.bundle_dir}: {exc}", EXIT_NO_PROVIDER)
    progress = _Progress(quiet=args.quiet)
    try:
        kept = writer.lines
        with writer:
            _run(pipeline, items, writer, progress)
            writer.finish()
    except _WarmUpFailed as exc:
        progress.close()
        return _fail(f"{args.bundle_dir}: warm-up failed: {exc}")
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted after line {writer.last_line}: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (_Unusable, OSError) as exc:
        progress.close()
        return _fail(exc)
    progress.close()
    seconds = time.perf_counter() - progress.started
    if not args.quiet:
        resumed = f" (resumed after line {writer.resumed_after})" if writer.resumed_after else ""
        print(f"{writer.lines - kept} lines ({progress.rows} rows) in {seconds:.1f} s "
              f"({progress.rows / max(seconds, 1e-9):.0f} rows/s); {writer.lines} lines in {output}{resumed}",
              file=sys.stderr)
    if writer.errors:
        print(f"{writer.errors} line(s) failed: their error lines are in {output}", file=sys.stderr)
        return EXIT_LINES_FAILED
    return EXIT_OK


def _fail(exc: Exception | str, code: int = EXIT_USAGE) -> int:
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    return code


def _check_paths(source: Path, output: Path) -> None:
    if not source.exists():
        raise _Unusable(f"{source}: no such file or folder")
    if output.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise _Unusable(f"{output}: writing Parquet needs the pyarrow package (pip install pyarrow), or "
                            "write JSON lines (an OUTPUT not ending in .parquet)") from None
    if not output.parent.is_dir():
        raise _Unusable(f"{output}: its folder {output.parent} does not exist")
    if output.is_dir():
        raise _Unusable(f"{output}: is a folder")
    if output.exists() and source.is_file() and output.samefile(source):
        raise _Unusable(f"{output}: is INPUT itself; write the results to another file")


# -- reading -------------------------------------------------------------------------------------------------------


def _items(source: Path, pipeline: Pipeline, *, max_bytes: int, max_files: int) -> Iterator[_Item]:
    """The input's lines, decoded lazily (by `_Items.decode`) from the form INPUT's name says."""
    record = raw_input(pipeline.inputs)
    if source.is_dir():
        if record is None:
            raise _Unusable(f"{source}: a folder of files needs a bundle with one BYTES input (an image to "
                            f"decode); this one takes {', '.join(s.name for s in pipeline.inputs)}")
        return _files(source, record.name, max_bytes, max_files)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the generator
    except OSError as exc:
        raise _Unusable(f"{source}: cannot read it ({exc.strerror})") from None
    if source.suffix.lower() == ".csv":
        if record is None:
            raise _Unusable(f"{source}: CSV needs a bundle with one BYTES input of JSON rows (tabular); this one "
                            f"takes {', '.join(s.name for s in pipeline.inputs)}: use JSON lines")
        return _csv(handle, source, pipeline, max_bytes)
    return _jsonl(handle, pipeline, max_bytes)


def _decode(item: _Item, raw: bytes, pipeline: Pipeline) -> _Item:
    try:
        item.request = decode_line(raw, pipeline.inputs, pipeline.outputs, pipeline.serving)
    except ProtocolError as exc:
        item.error = exc.message
    return item


def _jsonl(handle: IO[bytes], pipeline: Pipeline, max_bytes: int) -> Iterator[_Item]:
    with handle:
        number = 0
        while True:
            raw = handle.readline(max_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # the rest of the line, in bounded steps
                    raw = handle.readline(1 << 20)
                yield _Item(number, error=f"line longer than {max_bytes} bytes (--max-line-bytes, "
                                          "serving.max_body_bytes)")
                continue
            if raw.strip():
                yield _Later(number, raw, pipeline)


class _Later(_Item):
    """A line whose decoding is left to the reader of `_run` (which may skip it when resuming)."""

    def __init__(self, line: int, raw: bytes, pipeline: Pipeline, file: str | None = None) -> None:
        super().__init__(line, file)
        self.raw, self.pipeline = raw, pipeline

    def decoded(self) -> _Item:
        return _decode(_Item(self.line, self.file), self.raw, self.pipeline)


def _csv(handle: IO[bytes], source: Path, pipeline: Pipeline, max_bytes: int) -> Iterator[_Item]:
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
    old = csv.field_size_limit()
    csv.field_size_limit(max_bytes)
    try:
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Unusable(f"{source}: line 1: not a CSV header ({exc})") from None
        start = reader.line_num + 1
        # a record of JSON numbers only is written into its row as it is (the row's JSON holds the same numbers)
        template = "{" + ",".join(json.dumps(k).replace("%", "%%") + ":%s" for k in header) + "}"
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield _Item(start, error=f"not a CSV record ({exc})")
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not values or values == [""]:
                continue
            if len(values) != len(header):
                yield _Item(line, error=f"{len(values)} values, the header names {len(header)} fields")
                continue
            joined = ",".join(values)
            if _NUMBERS.fullmatch(joined) and joined.count(",") == len(values) - 1:  # numbers only: JSON as they are
                yield _Later(line, (template % tuple(values)).encode(), pipeline)
            else:
                yield _Later(line, _csv_row({k: _csv_value(v) for k, v in zip(header, values, strict=True)}),
                             pipeline)
    finally:
        csv.field_size_limit(old)
        text.close()


_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_NUMBERS = re.compile(f"{_NUMBER}(?:,{_NUMBER})*")
"""CSV values (joined by commas) that are JSON numbers, each (ASCII digits: `str.isdigit` takes others)."""


def _csv_row(row: dict[str, Any]) -> bytes:
    """A CSV record as the JSON row the pipeline reads (NaN and infinities as Python's json writes them)."""
    try:
        return _json.dumps(row)
    except ValueError:  # "nan", "inf": the tabular step's non-finite rules decide
        return json.dumps(row).encode()


def _csv_value(text: str) -> Any:
    """A CSV value as JSON: integer, number, true/false, null (empty), else the string."""
    text = text.strip()
    if not text:
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _files(folder: Path, name: str, max_bytes: int, max_files: int) -> Iterator[_Item]:
    names: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                names.append(entry.name)
                if len(names) > max_files:
                    raise _Unusable(f"{folder}: more than {max_files} files (--max-files); split it")
    return _read_files(folder, sorted(names), name, max_bytes)


def _read_files(folder: Path, names: list[str], name: str, max_bytes: int) -> Iterator[_Item]:
    for number, file in enumerate(names, start=1):
        item = _Item(number, file)
        try:
            with open(folder / file, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            item.error = f"cannot read it ({exc.strerror})"
            yield item
            continue
        if len(data) > max_bytes:
            item.error = f"larger than {max_bytes} bytes (--max-line-bytes, serving.max_body_bytes)"
        else:
            array = np.empty(1, dtype=object)
            array[0] = data
            item.request = Line({name: array}, 1, True)
        yield item


# -- running -------------------------------------------------------------------------------------------------------


def _run(pipeline: Pipeline, items: Iterator[_Item], writer: _Writer, progress: _Progress) -> None:
    """Batches of `max_batch_size` rows through the pipeline's instances, written in input order. Lines are
    decoded a block at a time (`_decode_block`), on this thread while the instances run the batches before."""
    size = pipeline.serving.max_batch_size
    instances = len(pipeline.sessions)
    pending: deque[tuple[list[_Item], Future[list[_Result]]]] = deque()
    with ThreadPoolExecutor(max_workers=instances, thread_name_prefix="infc-run") as pool:
        batch: list[_Item] = []
        units: list[Line | _Chunk] = []
        later: list[_Later] = []
        rows = 0
        turn = 0

        def add(done: list[_Item], unit: Line | _Chunk | None) -> None:
            nonlocal rows
            batch.extend(done)
            if unit is not None:
                units.append(unit)
                rows += unit.rows
            if rows >= size or len(batch) >= 4 * size:
                submit()

        def decode() -> None:
            nonlocal later
            block, later = later, []
            for done, unit in _decode_block(block, pipeline):
                add(done, unit)

        def submit() -> None:
            nonlocal batch, units, rows, turn
            pending.append((batch, pool.submit(_run_batch, pipeline, units, turn % instances)))
            turn += 1
            batch, units, rows = [], [], 0
            while len(pending) > instances:  # one batch waiting per instance: this thread reads ahead
                _write(*pending.popleft(), writer, progress)

        for item in items:
            if item.line <= writer.resumed_after:
                continue
            if turn == 0 and not batch and not later:  # the first line to run: warm up as the server does
                try:                                   # before it is ready (kernels compiled, arenas sized),
                    pipeline.warmup()                  # off the clock
                except Exception as exc:
                    raise _WarmUpFailed(f"{type(exc).__name__}: {exc}") from None
                progress.started = time.perf_counter()
            if isinstance(item, _Later):
                later.append(item)
                if rows + len(later) >= size or len(batch) + len(later) >= 4 * size:
                    decode()  # a line is at least one row: decoded once the block may fill the batch
            else:
                decode()
                add([item], item.request)
        decode()
        if batch:
            submit()
        while pending:
            _write(*pending.popleft(), writer, progress)


@dataclass
class _Chunk:
    """Consecutive one-row lines decoded together: their tensors, a row per line."""

    tensors: Tensors
    rows: int

    def line(self, row: int) -> Line:
        return Line({k: v[row:row + 1] for k, v in self.tensors.items()}, 1, True)


_ONE_ROW = Line({}, 1, True)
"""The request of a line that is a row of a `_Chunk` (its tensors are the chunk's)."""


def _decode_block(later: list[_Later], pipeline: Pipeline) -> Iterator[tuple[list[_Item], Line | _Chunk | None]]:
    """`later`'s lines decoded, in order, as (items, the unit that runs them): a block of raw records (tabular
    rows, texts) or of rows that numpy reads in one step is one `_Chunk`; any other line is decoded alone
    (`decode_line`, whose errors name the field), its request its own unit (None when it failed)."""
    if not later:
        return
    record = raw_input(pipeline.inputs)
    if record is not None:
        run: list[_Item] = []
        values: list[bytes] = []
        for item in later:
            raw = item.raw
            value = _record_value(raw)
            if value is not None:
                run.append(_Item(item.line, item.file, _ONE_ROW))
                values.append(value)
                continue
            if run:
                yield run, _Chunk({record.name: _bytes_array(values)}, len(values))
                run, values = [], []
            alone = item.decoded()
            yield [alone], alone.request
        if run:
            yield run, _Chunk({record.name: _bytes_array(values)}, len(values))
        return
    tensors = named_rows([item.raw for item in later], pipeline.inputs)
    if tensors is not None:
        yield [_Item(item.line, item.file, _ONE_ROW) for item in later], _Chunk(tensors, len(later))
        return
    for item in later:
        alone = item.decoded()
        yield [alone], alone.request


def _record_value(raw: bytes) -> bytes | None:
    """The value of a raw record line as `decode_line` makes it (the line itself, or a JSON string's UTF-8
    text), or None for a line it decodes otherwise (a V2 request) or refuses."""
    if b'"inputs"' not in raw and not raw.lstrip().startswith(b'"'):  # a raw record: `decode_line`'s rule
        return raw.strip()
    if not raw.lstrip().startswith(b'"'):
        return None
    try:
        doc = _json.loads(raw)
        return doc.encode() if type(doc) is str else None
    except (ValueError, RecursionError, UnicodeEncodeError):
        return None  # decoded alone: its error line says why


def _bytes_array(values: list[bytes]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _write(batch: list[_Item], future: Future[list[_Result]], writer: _Writer,
           progress: _Progress) -> None:
    results = iter(future.result())
    records = []
    for item in batch:
        if item.request is None:
            records.append(_record(item))
            continue
        progress.rows += item.request.rows
        records.append(_record(item, next(results)))
    writer.write(records)
    progress.update(len(batch))


def _run_batch(pipeline: Pipeline, units: list[Line | _Chunk], instance: int) -> list[_Result]:
    """Each line's outputs as JSON values, or its error, in order: units whose tensors concatenate run as one
    request; a group that fails runs again one line at a time, so that only the bad lines fail."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, unit in enumerate(units):
        key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(unit.tensors.items()))
        groups.setdefault(key, []).append(index)
    merged = [_concat([units[i].tensors for i in group]) for group in groups.values()]
    answers = pipeline.run_batch(merged, instance=instance)
    results: list[list[_Result]] = [[] for _ in units]
    for group, answer in zip(groups.values(), answers, strict=True):
        if isinstance(answer, Exception):
            if len(group) > 1 or (isinstance(units[group[0]], _Chunk) and units[group[0]].rows > 1):
                for i in group:
                    results[i] = _alone(pipeline, units[i], instance)
            else:
                results[group[0]] = [answer]
            continue
        start = 0
        for i in group:
            unit = units[i]
            stop = start + unit.rows
            part = {k: v[start:stop] for k, v in answer.items()} if len(group) > 1 else answer
            results[i] = _rows(part, unit.rows) if isinstance(unit, _Chunk) else _split(part, [unit])
            start = stop
    return [result for unit in results for result in unit]


def _alone(pipeline: Pipeline, unit: Line | _Chunk, instance: int) -> list[_Result]:
    """The unit's lines run one at a time."""
    lines = [unit.line(row) for row in range(unit.rows)] if isinstance(unit, _Chunk) else [unit]
    results: list[_Result] = []
    for line in lines:
        answer = pipeline.run_batch([line.tensors], instance=instance)[0]
        results.append(answer if isinstance(answer, Exception) else _split(answer, [line])[0])
    return results


def _rows(answer: Tensors, rows: int) -> list[_Result]:
    """`answer` (one row per line) as each line's JSON values; a row holding a value JSON cannot carry fails."""
    names = list(answer)
    columns = [_json_values(np.asarray(answer[name]), name) for name in names]
    results: list[_Result] = [dict(zip(names, row, strict=True))
                              for row in zip(*(values for values, _ in columns), strict=True)]
    if not names:
        results = [{} for _ in range(rows)]
    for _, bad in columns:
        for row, why in sorted(bad.items()):
            if isinstance(results[row], dict):
                results[row] = ValueError(why)
    return results


def _split(answer: Tensors, requests: list[Line]) -> list[_Result]:
    """`answer` (the outputs of `requests`' rows, concatenated) as each request's JSON values; a line whose rows
    hold a value JSON cannot carry (NaN, infinity, bytes that are not UTF-8) fails alone."""
    results: list[_Result] = [{} for _ in requests]
    for name, array in answer.items():
        values, bad = _json_values(np.asarray(array), name)
        start = 0
        for index, request in enumerate(requests):
            stop = start + request.rows
            result = results[index]
            if isinstance(result, dict) and (request.outputs is None or any(o.name == name for o in request.outputs)):
                failed = next((bad[row] for row in range(start, stop) if row in bad), None) if bad else None
                if failed is not None:
                    results[index] = ValueError(failed)
                else:
                    result[name] = values[start] if request.one_row else values[start:stop]
            start = stop
    return results


def _json_values(array: np.ndarray, name: str) -> tuple[list[Any], dict[int, str]]:
    """The rows of `array` as JSON values (BYTES as text), and the rows that JSON cannot carry, with why."""
    bad: dict[int, str] = {}
    if array.dtype.kind in "fc":
        finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if not finite.all():
            bad = {int(r): f"output {name!r} holds NaN or infinity, which JSON cannot carry"
                   for r in np.flatnonzero(~finite)}
    if array.dtype.kind == "O" and array.size:  # BYTES: decoded in one pass when every value is UTF-8 bytes
        flat = array.ravel().tolist()
        try:
            texts = [value.decode() for value in flat]
        except (AttributeError, UnicodeDecodeError):
            pass  # a value that is not bytes, or not UTF-8: row by row below, which names it
        else:
            decoded = np.empty(len(texts), dtype=object)
            decoded[:] = texts
            return decoded.reshape(array.shape).tolist(), bad
    values = array.tolist()
    if array.dtype.kind in "OSU":
        for row, value in enumerate(values):
            try:
                values[row] = _text(value)
            except UnicodeDecodeError:
                bad[row] = f"output {name!r} holds bytes that are not UTF-8"
    return values, bad


def _text(value: Any) -> Any:
    """BYTES values (nested lists of bytes) as text."""
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value.decode() if isinstance(value, bytes) else str(value)


def _concat(tensors: list[Tensors]) -> Tensors:
    if len(tensors) == 1:
        return tensors[0]
    return {name: np.concatenate([t[name] for t in tensors]) for name in tensors[0]}


def _record(item: _Item, result: _Result | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"line": item.line}
    if item.file is not None:
        record["file"] = item.file
    if item.request is not None and item.request.id is not None:
        record["id"] = item.request.id
    if isinstance(result, dict):
        record["outputs"] = result
    elif isinstance(result, ProtocolError):
        record["error"] = result.message
    elif result is not None:
        record["error"] = str(result) or type(result).__name__
    else:
        record["error"] = item.error or "no result"
    return record


# -- writing -------------------------------------------------------------------------------------------------------


class _Writer:
    """Appends JSON lines to OUTPUT (or to OUTPUT.partial.jsonl for Parquet), after the lines a previous run kept."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.parquet = output.suffix == ".parquet"
        self.path = output.with_name(output.name + PARTIAL) if self.parquet else output
        self.lines = self.errors = self.resumed_after = 0
        if self.parquet and output.exists() and not self.path.exists():
            self._from_parquet()
        self._resume()
        self.last_line = self.resumed_after
        if not os.access(self.path if self.path.exists() else self.path.parent, os.W_OK):
            raise _Unusable(f"{self.path}: cannot write it (permission denied)")

    def __enter__(self) -> _Writer:
        # written in large blocks: each write to the file lets the worker threads take the interpreter for a
        # while (the GIL), so writing a batch at a time cost this thread about a tenth of its time
        self.handle: IO[bytes] = open(self.path, "ab", buffering=1 << 20)  # noqa: SIM115 - closed by __exit__
        self.flushed = 0.0  # the first batch is flushed at once: OUTPUT shows the run has started
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def _resume(self) -> None:
        """Keep the complete lines already in the file; cut a last line an interruption left short."""
        if not self.path.exists():
            return
        good = 0
        try:
            with open(self.path, "rb") as handle:
                for raw in handle:
                    if not raw.endswith(b"\n"):  # the last line, cut short by an interruption: dropped
                        break
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        record = None
                    if not isinstance(record, dict) or not isinstance(record.get("line"), int):
                        raise _Unusable(f"{self.path}: line {self.lines + 1} is not a line `infc run` writes: "
                                        "this file is not the output of a run to resume; remove it or write "
                                        "another OUTPUT")
                    good += len(raw)
                    self.lines += 1
                    self.errors += "error" in record
                    self.resumed_after = record["line"]
            if good < self.path.stat().st_size:
                os.truncate(self.path, good)
        except OSError as exc:
            raise _Unusable(f"{self.path}: cannot resume from it ({exc.strerror})") from None

    def _from_parquet(self) -> None:
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(self.output).to_pylist()
        except Exception as exc:  # not Parquet, or not ours
            raise _Unusable(f"{self.output}: cannot resume from it ({type(exc).__name__}: {exc})") from None
        with open(self.path, "wb") as handle:
            handle.writelines(json.dumps({k: v for k, v in r.items() if v is not None}).encode() + b"\n"
                              for r in records)

    def write(self, records: list[dict[str, Any]]) -> None:
        lines = []
        for record in records:
            try:
                lines.append(_json.dumps(record))
            except ValueError as exc:  # checked in `_value`: never expected
                lines.append(_json.dumps({"line": record["line"], "error": str(exc)}))
                record = {"error": ""}
            self.errors += "error" in record
        self.handle.write(b"\n".join(lines) + b"\n")
        now = time.monotonic()
        if now - self.flushed >= FLUSH_EVERY_S:  # a killed run loses at most this much work (it resumes)
            self.handle.flush()
            self.flushed = now
        self.lines += len(records)
        self.last_line = records[-1]["line"]

    def finish(self) -> None:
        """Write the Parquet file from the partial JSON lines (atomically), then remove them."""
        if not self.parquet:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.handle.flush()
        with open(self.path, "rb") as handle:
            records = [json.loads(raw) for raw in handle]
        temporary = self.output.with_name(self.output.name + ".tmp")
        columns = list(dict.fromkeys(key for record in records for key in record))  # from_pylist reads row 0's
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in records]), temporary)
        os.replace(temporary, self.output)
        self.handle.close()
        self.path.unlink()


class _Progress:
    """Rows done and rows/s on stderr: a tqdm bar on a terminal (when tqdm is installed), else a line every
    `PROGRESS_EVERY_S` seconds."""

    def __init__(self, *, quiet: bool) -> None:
        self.rows = 0
        self.quiet = quiet
        self.started = self.shown = time.perf_counter()
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(unit=" lines", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, lines: int) -> None:
        if self.bar is not None:
            self.bar.update(lines)
            self.bar.set_postfix_str(f"{self.rows / max(time.perf_counter() - self.started, 1e-9):.0f} rows/s",
                                     refresh=False)
            return
        now = time.perf_counter()
        if not self.quiet and now - self.shown >= PROGRESS_EVERY_S:
            self.shown = now
            print(f"{self.rows} rows, {self.rows / (now - self.started):.0f} rows/s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

