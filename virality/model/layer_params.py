"""Parse a Python layer's ``param_str``: JSON checked against a whitelist of keys.

Layers depend on ``param_str`` only (never on global state), and a misspelt or
mistyped key is an error that names the layer and the key; nothing is ``eval``-ed.
"""
import json


class LayerConfigError(ValueError):
    """A Python layer was configured wrongly (bad param_str, bottoms or tops)."""


def parse_param_str(layer, param_str, schema):
    """Return a dict of every key in ``schema`` with defaults filled in.

    layer:     the layer's name for messages, e.g. "RankingLoss".
    param_str: the layer's param_str ('' or a JSON object).
    schema:    {key: (default, type or tuple of types)}; a default of
               ``REQUIRED`` makes the key mandatory.
    """
    text = (param_str or "").strip()
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise LayerConfigError(f"{layer}: param_str is not valid JSON ({err}): {param_str!r}") from None
    if not isinstance(given, dict):
        raise LayerConfigError(f"{layer}: param_str must be a JSON object, got {param_str!r}")
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise LayerConfigError(
            f"{layer}: unknown param_str key(s) {unknown}; allowed: {sorted(schema)}")
    config = {}
    for key, (default, types) in schema.items():
        if key not in given:
            if default is REQUIRED:
                raise LayerConfigError(f"{layer}: param_str key '{key}' is required")
            config[key] = default
            continue
        value = given[key]
        # JSON has no int/float distinction worth keeping: accept ints where floats are expected.
        if float in _as_tuple(types) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise LayerConfigError(f"{layer}: param_str key '{key}' must be {_names(types)}, got {value!r}")
        if not isinstance(value, types):
            raise LayerConfigError(f"{layer}: param_str key '{key}' must be {_names(types)}, got {value!r}")
        config[key] = value
    return config


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _names(types):
    return " or ".join(t.__name__ for t in _as_tuple(types))
