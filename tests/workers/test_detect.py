import json

import pytest

from workers.detect import OFFER_ONLY_ENV, detect_resources, format_resources, is_jetson, main, offer_only


@pytest.mark.parametrize("jetson, cuda, zigzag, expected", [
    (False, False, False, {"hw_cpu": 1}),
    (False, True, True, {"hw_cpu": 1, "hw_cuda": 1, "hw_asic": 1}),
    (True, True, False, {"hw_cpu": 1, "hw_jetson": 1}),
])
def test_resources(jetson, cuda, zigzag, expected):
    assert detect_resources(jetson=jetson, cuda=cuda, zigzag=zigzag) == expected


def test_this_machine_offers_cpu_and_the_simulator():
    found = detect_resources()
    assert found["hw_cpu"] == 1 and found.get("hw_asic") == 1  # zigzag-dse is installed here


def test_jetson_detection(tmp_path):
    model = tmp_path / "model"
    assert not is_jetson(tmp_path / "absent", model)
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert is_jetson(tmp_path / "absent", model)
    (tmp_path / "nv_tegra_release").write_text("# R35 (release)")
    assert is_jetson(tmp_path / "nv_tegra_release", tmp_path / "absent")


def test_cli_prints_json_and_flag(capsys):
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == detect_resources()
    main(["--format", "flag"])
    out = capsys.readouterr().out.strip()
    assert out.startswith("--resources='") and json.loads(out[len("--resources='"):-1]) == detect_resources()
    assert format_resources({"hw_cpu": 1}, "flag") == "--resources='{\"hw_cpu\": 1}'"


def test_offer_only_narrows_the_detected_resources_and_never_adds_one():
    found = {"hw_cpu": 1, "hw_asic": 1}
    assert offer_only(found, None) == (found, [])
    assert offer_only(found, "hw_asic") == ({"hw_asic": 1}, [])
    assert offer_only(found, "") == ({}, [])  # a host that offers no hardware (e.g. a head kept for the driver)
    assert offer_only(found, " hw_cpu , hw_cuda") == ({"hw_cpu": 1}, ["hw_cuda"])


def test_cli_honours_offer_only_and_names_what_is_missing(capsys, monkeypatch):
    monkeypatch.setenv(OFFER_ONLY_ENV, "hw_asic,hw_jetson")
    assert main([]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"hw_asic": 1}  # zigzag-dse is installed here; no Jetson
    assert "hw_jetson" in out.err and OFFER_ONLY_ENV in out.err
