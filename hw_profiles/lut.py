"""Latency tables (LUTs): the Parquet schema of docs/design.md section 4, its I/O, merging, and lookups.

One file per hardware profile; one row per (hardware, layer signature, rank), rank 0 being the
original layer. A file carries `schema_version` both as a column and in the Parquet metadata.
Version 2 records each timing's spread (p10 beside median and p90), how often the row was measured
again, the reference workload's slowdown at its time, and whether it was accepted noisy; a version-1
file is still read (those columns unknown). Any other version, and a corrupt or truncated file, are
refused naming the file and the fix.

End-to-end calibration (latency ~ a + b * sum of LUT latencies) is kept beside the table in a small
JSON file, `<hardware>.calibration.json` (see `hw_profiles.calibration`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from haloc.decomposition import LayerSpec, lut_rank
from haloc.errors import BadInputError
from haloc.files import atomic_write

from .signature import LayerSignature

LUT_SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_META_KEY = b"haloc_lut_schema_version"

_i32, _f64, _str = pa.int32(), pa.float64(), pa.string()
LUT_SCHEMA = pa.schema([
    ("schema_version", _i32),
    ("hardware", _str),
    ("signature", _str),  # LayerSignature.key, the join key
    ("op", _str), ("c_in", _i32), ("c_out", _i32),
    ("kernel_h", _i32), ("kernel_w", _i32), ("stride_h", _i32), ("stride_w", _i32),
    ("padding_h", _i32), ("padding_w", _i32), ("dilation_h", _i32), ("dilation_w", _i32),
    ("input_h", _i32), ("input_w", _i32), ("batch", _i32), ("dtype", _str), ("bias", pa.bool_()),
    ("rank", _i32),  # 0 = original layer
    ("latency_mean_ms", _f64), ("latency_median_ms", _f64), ("latency_p90_ms", _f64), ("latency_std_ms", _f64),
    ("repeats", _i32),
    ("energy_pj", _f64),  # null for timed (torch) hardware
    ("timestamp", pa.timestamp("us", tz="UTC")),
    ("host", _str),
    ("software", _str),  # JSON {"torch": ..., "python": ..., "zigzag": ...}
    # --- version 2
    ("latency_p10_ms", _f64),
    ("remeasured", _i32),  # measured again (interleaved with the reference) this many times
    ("slowdown", _f64),  # the reference workload's time then / its fastest (1.0: quiet); null: simulated
    ("noisy", pa.bool_()),  # still over the profile's spread after every re-measurement, kept with its spread
    # --- version 3
    ("protocol", _str),  # HardwareProfile.protocol_key of the profile that measured it; null: unknown (older file)
], metadata={_META_KEY: str(LUT_SCHEMA_VERSION).encode()})
_V2_COLUMNS = ("latency_p10_ms", "remeasured", "slowdown", "noisy")
_V3_COLUMNS = ("protocol",)

KEY_COLUMNS = ("hardware", "signature", "rank")


@dataclass(frozen=True)
class LutRow:
    hardware: str
    signature: LayerSignature
    rank: int
    latency_mean_ms: float
    latency_median_ms: float
    latency_p90_ms: float
    latency_std_ms: float
    repeats: int
    timestamp: object  # datetime (UTC)
    host: str
    software: str
    energy_pj: float | None = None
    latency_p10_ms: float | None = None
    remeasured: int = 0
    slowdown: float | None = None
    noisy: bool = False
    protocol: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.hardware, self.signature.key, self.rank)

    def to_record(self) -> dict:
        s = self.signature
        return {
            "schema_version": LUT_SCHEMA_VERSION, "hardware": self.hardware, "signature": s.key, "op": s.op,
            "c_in": s.c_in, "c_out": s.c_out, "kernel_h": s.kernel[0], "kernel_w": s.kernel[1],
            "stride_h": s.stride[0], "stride_w": s.stride[1], "padding_h": s.padding[0], "padding_w": s.padding[1],
            "dilation_h": s.dilation[0], "dilation_w": s.dilation[1], "input_h": s.input_hw[0],
            "input_w": s.input_hw[1], "batch": s.batch, "dtype": s.dtype, "bias": s.bias, "rank": self.rank,
            "latency_mean_ms": self.latency_mean_ms, "latency_median_ms": self.latency_median_ms,
            "latency_p90_ms": self.latency_p90_ms, "latency_std_ms": self.latency_std_ms,
            "repeats": self.repeats, "energy_pj": self.energy_pj, "timestamp": self.timestamp, "host": self.host,
            "software": self.software, "latency_p10_ms": self.latency_p10_ms, "remeasured": self.remeasured,
            "slowdown": self.slowdown, "noisy": self.noisy, "protocol": self.protocol,
        }


def signature_of_record(r: dict) -> LayerSignature:
    return LayerSignature(r["op"], r["c_in"], r["c_out"], (r["kernel_h"], r["kernel_w"]),
                          (r["stride_h"], r["stride_w"]), (r["padding_h"], r["padding_w"]),
                          (r["dilation_h"], r["dilation_w"]), (r["input_h"], r["input_w"]), r["batch"],
                          r["dtype"], r["bias"])


def rows_to_table(rows) -> pa.Table:
    return pa.Table.from_pylist([r.to_record() for r in rows], schema=LUT_SCHEMA)


def empty_table() -> pa.Table:
    return LUT_SCHEMA.empty_table()


def _upgrade(table: pa.Table, version: str) -> pa.Table:
    """An older table in this version's schema: the columns it lacks are unknown (null / 0 / False)."""
    n = len(table)
    extra = {"protocol": pa.nulls(n, _str)}
    if version == "1":
        extra.update({"latency_p10_ms": pa.nulls(n, _f64), "remeasured": pa.array([0] * n, _i32),
                      "slowdown": pa.nulls(n, _f64), "noisy": pa.array([False] * n, pa.bool_())})
    columns = {name: table.column(name) for name in table.schema.names if name != "schema_version"}
    columns["schema_version"] = pa.array([LUT_SCHEMA_VERSION] * n, _i32)
    columns.update(extra)
    return pa.table({f.name: columns[f.name] for f in LUT_SCHEMA}, schema=LUT_SCHEMA)


def check_table(table: pa.Table, source: str) -> pa.Table:
    """`table` in this version's schema (a version-1 table is upgraded); else BadInputError naming
    `source` and the fix."""
    meta = table.schema.metadata or {}
    version = meta.get(_META_KEY, b"?").decode()
    fix = f"delete {source} (or move it away) and profile again to rebuild it (--reprofile)"
    if version not in [str(v) for v in READABLE_VERSIONS]:
        raise BadInputError(f"LUT {source}: schema version {version}, this code reads versions "
                            f"{list(READABLE_VERSIONS)}; {fix}")
    if version in ("1", "2"):
        absent = _V3_COLUMNS + (_V2_COLUMNS if version == "1" else ())
        old_names = [n for n in LUT_SCHEMA.names if n not in absent]
        if table.schema.names != old_names:
            raise BadInputError(f"LUT {source}: columns {table.schema.names} do not match the version {version} "
                                f"schema; {fix}")
        table = _upgrade(table, version)
    if not table.schema.remove_metadata().equals(LUT_SCHEMA.remove_metadata()):
        raise BadInputError(f"LUT {source}: columns {table.schema.names} do not match the version "
                            f"{LUT_SCHEMA_VERSION} schema {LUT_SCHEMA.names}; {fix}")
    versions = set(table.column("schema_version").to_pylist())
    if versions - {LUT_SCHEMA_VERSION}:
        raise BadInputError(f"LUT {source}: rows with schema_version {sorted(versions)}, expected "
                            f"{LUT_SCHEMA_VERSION}; {fix}")
    return table


def parquet_bytes_to_table(data: bytes, source: str) -> pa.Table:
    """Parse a LUT file's bytes; a corrupt or truncated file becomes BadInputError naming `source`."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise BadInputError(f"LUT {source} is corrupt or truncated ({e}); delete it and profile again") from e
    return check_table(table, source)


def read_lut(path: str | Path) -> pa.Table:
    """Read a LUT file from a local path (an absent file reads as an empty table)."""
    path = Path(path)
    if not path.exists():
        return empty_table()
    return parquet_bytes_to_table(path.read_bytes(), str(path))


def write_lut(path: str | Path, table: pa.Table) -> None:
    """Write atomically: a temp file in the same folder, then rename over the target."""
    check_table(table, str(path))
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def merge(existing: pa.Table, new: pa.Table) -> pa.Table:
    """Union of two LUT tables, one row per (hardware, signature, rank); a new row replaces an old one."""
    new_keys = set(zip(*(new.column(c).to_pylist() for c in KEY_COLUMNS)))
    keep = [k not in new_keys for k in zip(*(existing.column(c).to_pylist() for c in KEY_COLUMNS))]
    merged = pa.concat_tables([existing.filter(pa.array(keep, pa.bool_())), new]) if len(existing) else new
    seen, unique = set(), []
    for k in zip(*(merged.column(c).to_pylist() for c in KEY_COLUMNS)):
        unique.append(k not in seen)  # duplicates inside `new` itself: first wins
        seen.add(k)
    return merged.filter(pa.array(unique, pa.bool_())).replace_schema_metadata(LUT_SCHEMA.metadata)


def existing_keys(table: pa.Table, protocol: str | None = None) -> set[tuple[str, str, int]]:
    """Keys of the table's rows; with `protocol`, only of the rows measured under it (the others are
    another protocol's measurements, to be taken again)."""
    keys = zip(*(table.column(c).to_pylist() for c in KEY_COLUMNS))
    if protocol is None:
        return set(keys)
    return {k for k, p in zip(keys, table.column("protocol").to_pylist()) if p == protocol}


def noisy_rows(table: pa.Table) -> list[dict]:
    """The rows kept noisy, each {"signature", "rank", "median_ms", "spread"} ((p90 - p10) / median)."""
    out = []
    for r in table.filter(pc.equal(table.column("noisy"), True)).to_pylist():
        p10 = r["latency_p10_ms"] if r["latency_p10_ms"] is not None else r["latency_median_ms"]
        spread = (r["latency_p90_ms"] - p10) / r["latency_median_ms"] if r["latency_median_ms"] else 0.0
        out.append({"signature": r["signature"], "rank": r["rank"], "median_ms": r["latency_median_ms"],
                    "spread": spread})
    return out


@dataclass
class LatencyTable:
    """Lookups over the rows of one hardware: per-layer latency curves and candidate-latency vectors.

    Latencies are medians (ms). `dtype` selects rows when a table holds several (defaults to the
    only one present).
    """

    hardware: str
    table: pa.Table
    dtype: str | None = None
    _curves: dict[str, dict[int, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        t = self.table.filter(pc.equal(self.table.column("hardware"), self.hardware))
        dtypes = set(t.column("dtype").to_pylist())
        if self.dtype is None and len(dtypes) > 1:
            raise BadInputError(f"LUT of {self.hardware!r} holds dtypes {sorted(dtypes)}; pass dtype=one of them")
        self.dtype = self.dtype or (dtypes.pop() if dtypes else "float32")
        for sig, rank, ms in zip(t.column("signature").to_pylist(), t.column("rank").to_pylist(),
                                 t.column("latency_median_ms").to_pylist()):
            self._curves.setdefault(sig, {})[rank] = ms

    @classmethod
    def from_file(cls, path: str | Path, hardware: str | None = None) -> LatencyTable:
        return cls(hardware or Path(path).stem, read_lut(path))

    def signature(self, spec: LayerSpec, batch: int) -> LayerSignature:
        return LayerSignature.from_spec(spec, batch, self.dtype)

    def curve(self, spec: LayerSpec, batch: int) -> dict[int, float]:
        """{rank: median ms} measured for this layer, rank 0 = original; {} if the layer is absent."""
        return dict(sorted(self._curves.get(self.signature(spec, batch).key, {}).items()))

    def candidate_latencies(self, spec: LayerSpec, ranks, batch: int) -> list[float]:
        """Latency (ms) of the layer at each candidate rank.

        A rank >= spec.max_rank costs the original layer (rank 0: the search keeps the layer whole).
        A rank between two measured ranks is interpolated linearly between its neighbours; below the
        smallest measured rank it costs the smallest one.
        """
        curve = self.curve(spec, batch)
        if 0 not in curve:
            raise BadInputError(f"layer {spec.name!r} ({self.signature(spec, batch).key}) has no rows in the "
                                f"LUT of {self.hardware!r}; profile the model on this hardware first")
        grid = sorted(r for r in curve if r > 0)
        out = []
        for r in ranks:
            r = int(r)
            if r >= spec.max_rank or not grid:
                out.append(curve[0])
            elif r in curve:
                out.append(curve[r])
            elif r < grid[0]:
                out.append(curve[grid[0]])
            else:
                i = bisect.bisect_left(grid, r)
                lo, hi = grid[i - 1], grid[min(i, len(grid) - 1)]
                t = 0.0 if hi == lo else (r - lo) / (hi - lo)
                out.append(curve[lo] + t * (curve[hi] - curve[lo]))
        return out

    def missing_layers(self, specs, batch: int) -> list[str]:
        """Names of the layers (a dict or list of LayerSpec) with no original-layer row in this LUT."""
        items = specs.values() if isinstance(specs, dict) else specs
        return [s.name for s in items if 0 not in self._curves.get(self.signature(s, batch).key, {})]

    def predict(self, specs: dict[str, LayerSpec], ranks: dict, batch: int) -> float:
        """Sum over decomposable layers of their LUT latency at `ranks` (ranks JSON content: an absent
        layer is the original; see haloc.decomposition.lut_rank)."""
        return sum(self.candidate_latencies(s, [lut_rank(s, ranks.get(n))], batch)[0] for n, s in specs.items())
