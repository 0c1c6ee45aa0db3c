"""Small argument helpers shared by the layers."""


def to_pair(value, name):
    """`value` as a (height, width) tuple of ints; an int means a square."""
    if isinstance(value, int):
        return (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ValueError(f"`{name}` must be an int or a (height, width) pair, got {value!r}.")
    if len(pair) != 2:
        raise ValueError(f"`{name}` must be an int or a (height, width) pair, got {value!r}.")
    for v in pair:
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise ValueError(f"`{name}` must hold positive ints, got {value!r}.")
    return pair
