"""cbct.signatures.borrow_keywords: one home for keyword options that several public functions share."""

from __future__ import annotations

import inspect
import typing

import pytest

from cbct.signatures import borrow_keywords


def _source(x: int, *, scale: float = 2.0, mode: str = "a") -> float:
    return x * scale if mode == "a" else -x * scale


@borrow_keywords(_source)
def _wrapper(x: int, *, extra: bool = False, **options: typing.Any) -> float:
    """Calls _source."""
    return _source(x, **options) + (1 if extra else 0)


def test_borrowed_keywords_show_in_the_signature_and_type_hints():
    params = inspect.signature(_wrapper).parameters
    assert list(params) == ["x", "extra", "scale", "mode"]
    assert params["scale"].default == 2.0 and params["mode"].kind is inspect.Parameter.KEYWORD_ONLY
    hints = typing.get_type_hints(_wrapper)
    assert hints["scale"] is float and hints["extra"] is bool
    assert _wrapper.__doc__ == "Calls _source."
    assert _wrapper(3) == 6.0 and _wrapper(3, scale=1.0, mode="b", extra=True) == -2.0


def test_unknown_keywords_and_a_hiding_name_are_refused():
    with pytest.raises(TypeError, match=r"_wrapper\(\).*colour"):
        _wrapper(1, colour="red")
    with pytest.raises(TypeError, match=r"rename \*\*scale"):
        @borrow_keywords(_source)
        def hides(x, **scale):
            return x
    with pytest.raises(TypeError, match=r"\*\*options"):
        @borrow_keywords(_source)
        def no_options(x):
            return x


def test_pipeline_validation_checks_borrowed_stage_keywords():
    from cbct.pipeline.registry import check_stage_params
    from cbct.pipeline.stages import fdk_stage
    from cbct.schema import SchemaError

    check_stage_params(fdk_stage, {"filter": "hann", "truncation": "off"}, "p.yaml", "params")
    with pytest.raises(SchemaError, match="filtr"):
        check_stage_params(fdk_stage, {"filtr": "hann"}, "p.yaml", "params")
