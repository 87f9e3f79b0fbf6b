import pytest

from haloc.errors import BadInputError
from hw_profiles.profile import HardwareProfile, get_profile, list_profiles, load_profile

GOOD = "name: {name}\nbackend: torch\nray_resource: hw_cpu\ndevice: cpu\nrepeats: 3\n"


@pytest.mark.parametrize("name", ["cpu", "cuda", "jetson", "asic"])
def test_shipped_profiles_load(name):
    p = get_profile(name)
    assert p.name == name and p.ray_resource.startswith("hw_")
    assert (p.backend == "zigzag") == (name == "asic")


def test_asic_profile_is_a_tpu_like_array_with_a_clock():
    p = get_profile("asic")
    assert p.accelerator == "tpu_like" and p.clock_hz == 1e9 and p.is_simulator


def test_extra_dir_adds_a_profile(tmp_path):
    (tmp_path / "mine.yaml").write_text(GOOD.format(name="mine"))
    assert "mine" in list_profiles([tmp_path])
    assert get_profile("mine", [tmp_path]) == HardwareProfile("mine", "torch", "hw_cpu", repeats=3)


@pytest.mark.parametrize("text, key, value", [
    (GOOD.format(name="bad") + "colour: red\n", "colour", "red"),
    (GOOD.format(name="bad").replace("torch", "tensorflow"), "backend", "tensorflow"),
    (GOOD.format(name="bad").replace("repeats: 3", "repeats: 0"), "repeats", "0"),
    (GOOD.format(name="bad").replace("device: cpu", "device: tpu"), "device", "tpu"),
    (GOOD.format(name="bad") + "dtype: int8\n", "dtype", "int8"),
    (GOOD.format(name="other"), "name", "other"),
    (GOOD.format(name="bad") + "budget_margin: 0.9\n", "budget_margin", "0.9"),
    ("name: bad\nbackend: zigzag\nray_resource: hw_asic\naccelerator: tpu_like\nclock_hz: fast\n", "clock_hz", "fast"),
])
def test_broken_profile_names_file_key_value_and_allowed(tmp_path, text, key, value):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and repr(key) in msg and value in msg and "allowed" in msg


def test_unparsable_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(BadInputError, match="bad.yaml"):
        load_profile(path)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(BadInputError, match="'cpu'"):
        get_profile("quantum")


def test_search_margin_follows_the_calibrated_error_on_timed_hardware_and_is_zero_on_simulators(tmp_path):
    cpu, asic = get_profile("cpu"), get_profile("asic")
    assert cpu.search_margin(None) == 0.05  # before a calibration
    assert cpu.search_margin(0.03) == pytest.approx(0.06)
    assert cpu.search_margin(0.0) == 0.03 and cpu.search_margin(0.4) == 0.10
    # a LUT seen pricing a model 4% under its measurement aims that far below, plus the timing noise
    assert cpu.search_margin(0.01, worst_under=0.04) == pytest.approx(0.05)
    assert cpu.search_margin(0.03, worst_under=0.02) == pytest.approx(0.06)  # the two-sided term is larger
    assert asic.search_margin(0.03) == 0.0
    (tmp_path / "mine.yaml").write_text(GOOD.format(name="mine") + "budget_margin: 0\n")
    assert get_profile("mine", [tmp_path]).search_margin(0.2) == 0.0  # the profile's own word wins


def test_the_timing_protocol_changes_with_how_rows_are_timed_not_with_the_noise_limits():
    from dataclasses import replace

    from hw_profiles.profile import TIMING_PROTOCOL_VERSION, get_profile

    cpu = get_profile("cpu")
    assert cpu.protocol()["version"] == TIMING_PROTOCOL_VERSION and cpu.protocol()["threads"] == cpu.threads
    for change in ({"threads": (cpu.threads or 1) + 1}, {"repeats": cpu.repeats + 1}, {"warmup": cpu.warmup + 1},
                   {"backend": "onnxruntime"}, {"min_run_time_s": 0.5}):
        assert replace(cpu, **change).protocol_key != cpu.protocol_key, change
    for change in ({"max_spread": 0.1}, {"calibration_gate": 0.5}, {"calibration_tolerance": 0.05},
                   {"rank_step": 4}, {"gate_rounds": 0}):
        assert replace(cpu, **change).protocol_key == cpu.protocol_key, change
    assert get_profile("asic").protocol()["accelerator"] == "tpu_like"


def test_measured_rows_record_their_protocol():
    from dataclasses import replace

    from hw_profiles.measure import measure_rows
    from hw_profiles.profile import get_profile
    from hw_profiles.signature import LayerSignature

    cpu = replace(get_profile("cpu"), warmup=1, repeats=2, min_run_time_s=0.0)
    (row,) = measure_rows(cpu, [(LayerSignature("conv2d", 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), (8, 8)), 4)])
    assert row.protocol == cpu.protocol_key


def test_worst_under_is_the_largest_held_out_error_of_the_points_priced_below_their_measurement():
    from hw_profiles.calibration import Calibration

    points = [{"lut_sum_ms": 10.0, "measured_ms": 10.5, "loo_error": 0.06},  # priced 10.0 < 10.5: under
              {"lut_sum_ms": 5.0, "measured_ms": 5.1, "loo_error": 0.03},   # under
              {"lut_sum_ms": 8.0, "measured_ms": 7.0, "loo_error": 0.2}]    # priced above: safe side
    cal = Calibration("cpu", a_ms=0.0, b=1.0, samples=3, within_10pct=1.0, median_rel_error=0.06, points=points)
    assert cal.worst_under == pytest.approx(0.06)
    assert Calibration("cpu", 0.0, 1.0, 1, 1.0, 0.0, points=points[2:]).worst_under == 0.0
