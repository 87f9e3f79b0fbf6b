import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from haloc.decomposition import LayerSpec
from haloc.errors import BadInputError
from hw_profiles.lut import (
    LUT_SCHEMA,
    LUT_SCHEMA_VERSION,
    LatencyTable,
    LutRow,
    existing_keys,
    merge,
    read_lut,
    rows_to_table,
    write_lut,
)
from hw_profiles.signature import LayerSignature

SPEC = LayerSpec("layer1.0.conv1", "tucker2", "conv2d", 16, 32, (3, 3), (1, 1), (1, 1), input_hw=(8, 8))
SIG = LayerSignature.from_spec(SPEC, 1, "float32")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def row(rank, ms, sig=SIG, hardware="cpu", energy=None):
    return LutRow(hardware, sig, rank, ms, ms, ms * 1.1, 0.01, 5, NOW, "host", '{"torch": "x"}', energy)


def curve_table(points=((0, 10.0), (1, 1.0), (8, 3.0), (16, 7.0), (32, 12.0))):
    return rows_to_table([row(r, ms) for r, ms in points])


def test_round_trip_keeps_every_column(tmp_path):
    rows = [row(0, 2.0), row(8, 1.0, energy=5.5)]
    write_lut(tmp_path / "cpu.parquet", rows_to_table(rows))
    back = read_lut(tmp_path / "cpu.parquet")
    assert back.schema.equals(LUT_SCHEMA, check_metadata=True)
    assert back.to_pylist() == rows_to_table(rows).to_pylist()
    assert back.column("energy_pj").to_pylist() == [None, 5.5]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_absent_file_reads_empty(tmp_path):
    assert len(read_lut(tmp_path / "none.parquet")) == 0


def test_other_schema_version_is_refused_naming_file_and_fix(tmp_path):
    path = tmp_path / "cpu.parquet"
    table = rows_to_table([row(0, 1.0)]).replace_schema_metadata({b"haloc_lut_schema_version": b"999"})
    pq.write_table(table, path)
    with pytest.raises(BadInputError) as err:
        read_lut(path)
    assert str(path) in str(err.value) and "999" in str(err.value) and "profile again" in str(err.value)


def test_missing_column_is_refused(tmp_path):
    path = tmp_path / "cpu.parquet"
    pq.write_table(rows_to_table([row(0, 1.0)]).drop_columns(["host"]), path)
    with pytest.raises(BadInputError, match="columns"):
        read_lut(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_is_refused_naming_file_and_fix(tmp_path, damage):
    path = tmp_path / "cpu.parquet"
    write_lut(path, rows_to_table([row(0, 1.0), row(1, 0.5)]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not parquet at all" * 10)
    with pytest.raises(BadInputError) as err:
        read_lut(path)
    assert str(path) in str(err.value) and "delete it" in str(err.value)


def test_merge_keeps_one_row_per_key_and_new_wins():
    old = rows_to_table([row(0, 1.0), row(8, 2.0)])
    new = rows_to_table([row(8, 3.0), row(16, 4.0), row(16, 4.5)])
    merged = merge(old, new)
    assert len(merged) == 3 and len(existing_keys(merged)) == 3
    by_rank = dict(zip(merged.column("rank").to_pylist(), merged.column("latency_median_ms").to_pylist()))
    assert by_rank == {0: 1.0, 8: 3.0, 16: 4.0}
    assert merged.schema.metadata == LUT_SCHEMA.metadata


def test_curve_and_candidate_latencies():
    lut = LatencyTable("cpu", curve_table())
    assert lut.curve(SPEC, 1) == {0: 10.0, 1: 1.0, 8: 3.0, 16: 7.0, 32: 12.0}
    # max_rank (32) costs the original layer; 12 lies halfway between 8 and 16; 20 a quarter from 16 to 32
    assert lut.candidate_latencies(SPEC, [32, 8, 12, 20, 1], 1) == pytest.approx([10.0, 3.0, 5.0, 8.25, 1.0])
    assert lut.curve(SPEC, 4) == {}


def test_candidate_latencies_of_an_absent_layer_says_profile_first():
    with pytest.raises(BadInputError, match="profile"):
        LatencyTable("cpu", curve_table()).candidate_latencies(SPEC, [4], batch=8)


def test_missing_layers_and_predict():
    other = LayerSpec("layer2.0.conv1", "tucker2", "conv2d", 32, 64, (3, 3), (2, 2), (1, 1), input_hw=(8, 8))
    lut = LatencyTable("cpu", curve_table())
    assert lut.missing_layers({"a": SPEC, "b": other}, 1) == ["layer2.0.conv1"]
    assert lut.predict({SPEC.name: SPEC}, {SPEC.name: 8}, 1) == 3.0
    assert lut.predict({SPEC.name: SPEC}, {}, 1) == 10.0  # absent from ranks: original layer


def test_table_of_several_dtypes_needs_a_choice():
    half = LayerSignature.from_spec(SPEC, 1, "float16")
    table = pa.concat_tables([curve_table(), rows_to_table([row(0, 1.0, sig=half)])])
    with pytest.raises(BadInputError, match="dtype"):
        LatencyTable("cpu", table)
    assert LatencyTable("cpu", table, dtype="float16").curve(SPEC, 1) == {0: 1.0}


def test_schema_version_column():
    assert rows_to_table([row(0, 1.0)]).column("schema_version").to_pylist() == [LUT_SCHEMA_VERSION]


def test_a_version_1_file_is_still_read_with_its_new_columns_unknown(tmp_path):
    """LUTs written before the spread was recorded (schema version 1) keep working."""
    v1_columns = [f for f in LUT_SCHEMA if f.name not in ("latency_p10_ms", "remeasured", "slowdown", "noisy",
                                                          "protocol")]
    v1_schema = pa.schema(v1_columns, metadata={b"haloc_lut_schema_version": b"1"})
    current = rows_to_table([row(0, 2.0), row(8, 1.0)])
    old = pa.table({f.name: current.column(f.name) for f in v1_columns}, schema=v1_schema)
    old = old.set_column(0, "schema_version", pa.array([1, 1], pa.int32()))
    path = tmp_path / "cpu.parquet"
    pq.write_table(old, path)
    back = read_lut(path)
    assert back.schema.equals(LUT_SCHEMA, check_metadata=True)
    assert back.column("latency_median_ms").to_pylist() == [2.0, 1.0]
    assert back.column("latency_p10_ms").to_pylist() == [None, None] and back.column("noisy").to_pylist() == [False] * 2
    assert back.column("schema_version").to_pylist() == [LUT_SCHEMA_VERSION] * 2
    assert LatencyTable("cpu", back).curve(SPEC, 1) == {0: 2.0, 8: 1.0}


def test_spread_columns_round_trip(tmp_path):
    r = LutRow("cpu", SIG, 4, 1.0, 1.0, 1.2, 0.1, 30, NOW, "h", "{}", latency_p10_ms=0.9, remeasured=2, slowdown=1.4,
               noisy=True)
    write_lut(tmp_path / "cpu.parquet", rows_to_table([r]))
    back = read_lut(tmp_path / "cpu.parquet").to_pylist()[0]
    assert (back["latency_p10_ms"], back["remeasured"], back["slowdown"], back["noisy"]) == (0.9, 2, 1.4, True)


def test_a_version_2_file_is_read_with_no_protocol_so_its_rows_count_as_another_protocols(tmp_path):
    """Rows written before the protocol was recorded are read, but profiling measures them again."""
    v2_columns = [f for f in LUT_SCHEMA if f.name != "protocol"]
    current = rows_to_table([row(0, 2.0), row(8, 1.0)])
    old = pa.table({f.name: current.column(f.name) for f in v2_columns},
                   schema=pa.schema(v2_columns, metadata={b"haloc_lut_schema_version": b"2"}))
    old = old.set_column(0, "schema_version", pa.array([2, 2], pa.int32()))
    path = tmp_path / "cpu.parquet"
    pq.write_table(old, path)
    back = read_lut(path)
    assert back.column("protocol").to_pylist() == [None, None]
    assert len(existing_keys(back)) == 2
    assert existing_keys(back, protocol='{"version":3}') == set()


def test_existing_keys_of_a_protocol_leave_out_another_protocols_rows():
    from dataclasses import replace

    a, b = replace(row(0, 2.0), protocol="threads=1"), replace(row(8, 1.0), protocol="threads=2")
    table = rows_to_table([a, b])
    assert existing_keys(table, "threads=1") == {a.key}
    assert existing_keys(table, "threads=2") == {b.key}
    assert existing_keys(table) == {a.key, b.key}


def test_noisy_rows_give_their_spread():
    from hw_profiles.lut import noisy_rows

    r = LutRow("cpu", SIG, 4, 1.0, 2.0, 3.0, 0.1, 30, NOW, "h", "{}", latency_p10_ms=1.0, noisy=True)
    steady = LutRow("cpu", SIG, 8, 1.0, 2.0, 2.1, 0.1, 30, NOW, "h", "{}", latency_p10_ms=1.9)
    rows = noisy_rows(rows_to_table([r, steady]))
    assert rows == [{"signature": SIG.key, "rank": 4, "median_ms": 2.0, "spread": 1.0}]
