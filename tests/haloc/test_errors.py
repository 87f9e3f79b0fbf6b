"""The core's messages name its own parameters; the command line shows them as its flags."""
import pytest

from haloc.errors import BadInputError, as_flag, param


def test_a_parameter_reads_as_a_keyword_to_python_and_as_a_flag_on_the_command_line():
    e = BadInputError(f"model 'm' has no head; pass {param('num_classes', '10')} or set {param('py_modules')}")
    assert str(e) == "model 'm' has no head; pass num_classes=10 or set py_modules"
    assert e.render(as_flag) == "model 'm' has no head; pass --num-classes 10 or set --py-modules"
    assert "\x1f" not in repr(str(e)) and e.message.count("\x1f") == 4
    wrapped = BadInputError(f"ranks file 'r.json': {e.message}")  # a wrapper keeps the parameters unrendered
    assert wrapped.render(as_flag).endswith("pass --num-classes 10 or set --py-modules")


def test_the_core_names_no_flag_and_no_ray(tmp_path):
    import haloc

    with pytest.raises(BadInputError) as err:
        haloc.models.ModelSpec("no_such_pkg_xyz.models:net")
    assert "py_modules=FOLDER" in str(err.value) and "--" not in str(err.value) and "Ray" not in str(err.value)
    assert "--py-modules FOLDER" in err.value.render(as_flag)
    with pytest.raises(BadInputError) as err:
        haloc.data.detect_data_kind(tmp_path)
    assert str(err.value).startswith(f"data={str(tmp_path)!r} is neither")
    assert err.value.render(as_flag).startswith(f"--data {str(tmp_path)!r} is neither")
