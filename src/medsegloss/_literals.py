"""``key=value, ...`` options in Python literal syntax, as loss terms (``tversky(alpha=0.3)``) and
model specs (``smp:Unet(encoder_name="resnet18")``) write them: one reader for both."""

from __future__ import annotations

import ast


def keyword_literals(args: str) -> dict:
    """``'alpha=0.3, beta=(1, 2)'`` -> ``{"alpha": 0.3, "beta": (1, 2)}``; ``""`` -> ``{}``.

    Raises ``ValueError`` naming the problem: not parseable, a positional or ``**`` argument, an
    option given twice, a value that is not a Python literal. Callers add what the options belong to.
    """
    if not args or not args.strip():
        return {}
    try:
        call = ast.parse(f"f({args})", mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"cannot parse the options ({error.msg})") from None
    if not isinstance(call, ast.Call) or call.args or any(keyword.arg is None for keyword in call.keywords):
        raise ValueError("options must be key=value pairs (no positional or ** arguments)")
    names = [keyword.arg for keyword in call.keywords]
    if len(set(names)) != len(names):
        raise ValueError("an option given twice")
    options = {}
    for keyword in call.keywords:
        try:
            options[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(f"option {keyword.arg!r} is not a Python literal ({ast.unparse(keyword.value)})") from None
    return options
