"""One home for keyword options that several public functions share.

A function that passes its options on to another declares ``**options`` and borrows the other's keyword-only
parameters with :func:`borrow_keywords`: ``inspect.signature`` and ``typing.get_type_hints`` then show the names,
defaults and annotations of the function that defines them, and a call is checked against that signature.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["borrow_keywords"]

F = TypeVar("F", bound=Callable[..., Any])
_KEYWORD_ONLY, _VAR_KEYWORD = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD


def borrow_keywords(source: Callable[..., Any]) -> Callable[[F], F]:
    """Decorator: the decorated function's ``**options`` stand for the keyword-only parameters of ``source``.

    Its signature lists the borrowed parameters (those it does not define itself) where ``**options`` stands,
    after its own; their annotations join its type hints, and a call with any other keyword raises ``TypeError``.
    The function receives in ``**options`` the borrowed keywords the caller gave; the defaults stay those of
    ``source``, applied when the function passes them on.
    """

    def decorate(fn: F) -> F:
        own = inspect.signature(fn)
        var_keyword = next((p.name for p in own.parameters.values() if p.kind is _VAR_KEYWORD), None)
        if var_keyword is None:
            raise TypeError(f"{fn.__name__} must take **options to borrow the keywords of {source.__name__}")
        source_params = inspect.signature(source).parameters
        if var_keyword in source_params:
            raise TypeError(f"{fn.__name__}: rename **{var_keyword}, which would hide the keyword {var_keyword!r} of "
                            f"{source.__name__}")
        hints = typing.get_type_hints(source)
        borrowed = [p.replace(annotation=hints.get(p.name, p.annotation))
                    for p in source_params.values()
                    if p.kind is _KEYWORD_ONLY and p.name not in own.parameters]
        params = [p for p in own.parameters.values() if p.kind is not _VAR_KEYWORD]
        signature = own.replace(parameters=params + borrowed)

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{fn.__name__}(): {exc}") from None
            return fn(*args, **kwargs)

        annotations = {k: v for k, v in fn.__annotations__.items() if k != var_keyword}
        checked.__annotations__ = {**annotations, **{p.name: p.annotation for p in borrowed}}
        checked.__signature__ = signature  # type: ignore[attr-defined]
        return cast(F, checked)

    return decorate
