"""Reading a /metrics page in the tests."""

from __future__ import annotations


def metric_sum(text: str, *names: str, **labels: str) -> float:
    """The sum of the samples of the named metrics whose labels include `labels`."""
    heads = tuple(name + "{" for name in names) + tuple(name + " " for name in names)
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(heads) and all(label in line for label in wanted)
    )
