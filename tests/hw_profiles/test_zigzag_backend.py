"""The ZigZag backend: real ZigZag runs (lean pipeline), checked against the stock API in a slow test."""
import logging
import threading

import pytest

from haloc.errors import BadInputError
from hw_profiles import zigzag_backend as zz
from hw_profiles.zigzag_backend import ConvWorkload, SimResult, list_accelerators, simulate


def conv3x3(c_in, c_out, hw):
    return ConvWorkload(c_in, c_out, kernel=(3, 3), padding=(1, 1), in_hw=(hw, hw))


def tucker2(c, r, hw):
    """1x1 c->r, 3x3 r->r, 1x1 r->c: the Tucker-2 decomposition of a c->c 3x3 conv."""
    return [ConvWorkload(c, r, in_hw=(hw, hw)), conv3x3(r, r, hw), ConvWorkload(r, c, in_hw=(hw, hw))]


def test_lists_shipped_accelerators():
    names = list_accelerators()
    assert {"tpu_like", "edge_tpu_like", "eyeriss_like"} <= set(names)
    for name in names:
        assert zz.hardware_yaml(name).is_file() and zz.mapping_yaml(name).is_file()


@pytest.mark.parametrize("accelerator", ["tpu_like", "edge_tpu_like", "eyeriss_like"])
def test_cycles_positive_and_grow_with_work(accelerator):
    small = simulate([ConvWorkload(32, 32, in_hw=(4, 4))], accelerator)
    wider = simulate([ConvWorkload(32, 32, in_hw=(8, 8))], accelerator)
    deeper = simulate([ConvWorkload(128, 32, in_hw=(4, 4))], accelerator)
    assert small.cycles > 0 and small.energy_pj > 0
    assert wider.cycles > small.cycles and wider.energy_pj > small.energy_pj
    assert deeper.cycles > small.cycles and deeper.energy_pj > small.energy_pj


def test_sequence_is_the_sum_of_its_layers():
    a, b = ConvWorkload(32, 16, in_hw=(8, 8)), conv3x3(16, 16, 8)
    both = simulate([a, b])
    assert both.cycles == simulate([a]).cycles + simulate([b]).cycles
    assert both.energy_pj == pytest.approx(simulate([a]).energy_pj + simulate([b]).energy_pj)


def test_tpu_like_cycles_step_at_multiples_of_32_output_channels():
    # Observed on the 32x32 array (1x1 conv, c_in 256, 16x16 input): c_out 1..32 costs 10273 + (c_out - 1)
    # cycles (the array is reloaded once per 32 output channels), 33..64 is flat at 12352, then another
    # step of 2048 at 65. So within a step the cost is (nearly) flat and it jumps across a multiple of 32.
    cycles = {k: simulate([ConvWorkload(256, k, in_hw=(16, 16))]).cycles for k in (1, 32, 33, 48, 64, 65)}
    assert 0 <= cycles[32] - cycles[1] <= 31  # +1 cycle per channel at most within the first step
    assert cycles[33] == cycles[48] == cycles[64]  # flat within the second step
    assert cycles[33] - cycles[32] > 1000  # the jump across 32
    assert cycles[65] - cycles[64] > 1000  # and across 64
    assert cycles[33] - cycles[32] == pytest.approx(cycles[65] - cycles[64], rel=0.01)  # same size of step


def test_tucker2_slower_for_16_channels_faster_for_256_channels():
    small = simulate([conv3x3(16, 16, 32)])
    assert simulate(tucker2(16, 16, 32)).cycles > small.cycles  # observed: 19550 against 11296

    big = simulate([conv3x3(256, 256, 14)])
    assert simulate(tucker2(256, 32, 14)).cycles < big.cycles / 2  # observed: 18282 against 123934


@pytest.fixture
def no_disk_cache(monkeypatch):
    monkeypatch.setenv("HALOC_ZIGZAG_CACHE", "off")


def test_cache_returns_same_result_without_simulating_again(no_disk_cache):
    zz.clear_cache()
    workload = ConvWorkload(48, 24, in_hw=(4, 4))
    first = simulate([workload], "edge_tpu_like")
    assert zz.cache_info() == {"hits": 0, "misses": 1}
    again = simulate([workload], "edge_tpu_like")
    assert again == first
    assert zz.cache_info() == {"hits": 1, "misses": 1}
    simulate([workload], "tpu_like")  # another accelerator is another entry
    assert zz.cache_info()["misses"] == 2


def test_disk_cache_serves_another_process_without_simulating(tmp_path, monkeypatch):
    monkeypatch.setenv("HALOC_ZIGZAG_CACHE", str(tmp_path / "zz.sqlite"))
    workload = ConvWorkload(36, 12, in_hw=(4, 4))
    zz.clear_cache()
    first = simulate([workload], "tpu_like")
    assert zz.cache_info() == {"hits": 0, "misses": 1}
    zz.clear_cache()  # as a fresh process would start: nothing in memory, the file on disk
    assert simulate([workload], "tpu_like") == first
    assert zz.cache_info() == {"hits": 1, "misses": 0}


def test_cache_is_thread_safe(no_disk_cache):
    zz.clear_cache()
    workload = ConvWorkload(40, 20, in_hw=(4, 4))
    results = []
    threads = [threading.Thread(target=lambda: results.append(simulate([workload] * 3))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert zz.cache_info() == {"hits": 11, "misses": 1}


def test_quiet_and_writes_no_files(tmp_path, monkeypatch, capfd, caplog, no_disk_cache):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    zz.clear_cache()
    result = simulate([conv3x3(8, 24, 6)], "eyeriss_like")
    assert isinstance(result, SimResult)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if r.name.startswith("zigzag") and r.levelno < logging.ERROR]
    assert list(tmp_path.iterdir()) == []


def test_linear_is_1x1_conv_on_one_pixel():
    import torch

    lin = torch.nn.Linear(512, 10)
    assert ConvWorkload.from_module(lin) == ConvWorkload(512, 10)
    conv = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
    w = ConvWorkload.from_module(conv, in_hw=(32, 32))
    assert w == ConvWorkload(16, 32, (3, 3), (2, 2), (1, 1), (32, 32))
    assert w.out_hw == (16, 16)


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda: simulate([ConvWorkload(8, 8)], "tpu"), "tpu_like"),
        (lambda: simulate([ConvWorkload(0, 8)]), "c_in"),
        (lambda: simulate([ConvWorkload(8, -1)]), "c_out"),
        (lambda: simulate([ConvWorkload(8, 8, batch=0)]), "batch"),
        (lambda: simulate([ConvWorkload(8, 8, kernel=(0, 3))]), "kernel"),
        (lambda: simulate([ConvWorkload(8, 8, stride=(1, 0))]), "stride"),
        (lambda: simulate([ConvWorkload(8, 8, padding=(-1, 0))]), "padding"),
        (lambda: simulate([ConvWorkload(8, 8, kernel=(5, 5), in_hw=(3, 3))]), "in_hw"),
        (lambda: simulate([(8, 8)]), "ConvWorkload"),
    ],
)
def test_bad_input_names_the_value(call, named):
    with pytest.raises(BadInputError, match=named):
        call()


@pytest.mark.parametrize("kwargs, named", [({"dilation": 2}, "dilation"), ({"groups": 4}, "groups")])
def test_unsupported_conv_is_bad_input(kwargs, named):
    import torch

    conv = torch.nn.Conv2d(16, 16, 3, padding=1, **kwargs)
    with pytest.raises(BadInputError, match=named):
        ConvWorkload.from_module(conv, in_hw=(8, 8))


@pytest.mark.slow
@pytest.mark.parametrize(
    "workload, accelerator",
    [
        (conv3x3(16, 16, 32), "tpu_like"),  # 720 loop orders in the stock search
        (ConvWorkload(256, 17, in_hw=(8, 8)), "edge_tpu_like"),
    ],
)
def test_lean_equals_stock_api(workload, accelerator, tmp_path, monkeypatch):
    from benchmarks.zigzag_stock import stock_simulate

    monkeypatch.chdir(tmp_path)
    zz.clear_cache()
    assert simulate([workload], accelerator) == stock_simulate(workload, accelerator)
    assert list(tmp_path.iterdir()) == []
