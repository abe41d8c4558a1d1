"""A route of the API, and the table that finds the route serving a method and path.

The routes themselves are declared in `routes` (and `store_routes`); this module is how one
is described and matched: its path templates under its family's mounts, their patterns, and the
lookup the middleware, the dispatcher and the OpenAPI document share.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from ..engine.call import Call
from ..engine.generation import Answer
from .families import ApiFamily

Handler = Callable[[Call[Any, Any]], Awaitable[Answer]]
Method = Literal["GET", "POST", "DELETE"]

# A path parameter: `{name}` is one segment, `{name:path}` the rest of the path, slashes and
# all (a model's `Owner/Name`).
_PARAMETER = re.compile(r"\{(\w+)(:path)?\}")


def _pattern(template: str) -> re.Pattern[str] | None:
    """The regular expression of a path template; None for a path without parameters."""
    if _PARAMETER.search(template) is None:
        return None
    parts: list[str] = []
    at = 0
    for m in _PARAMETER.finditer(template):
        parts.append(re.escape(template[at : m.start()]))
        parts.append(f"(?P<{m[1]}>{'.+' if m[2] else '[^/]+'})")
        at = m.end()
    parts.append(re.escape(template[at:]))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class Route:
    """One API route: a method and a path template under each of its family's mounts."""

    family: ApiFamily
    method: Method
    path: str  # a template: `{name}` is a segment, `{name:path}` the rest of the path
    handle: Handler
    response: type[BaseModel]
    description: str
    body: type[BaseModel] | None = None
    label: str | None = None  # metrics and access-log label; None: not metered
    admitted: bool = False  # through admission: draining, dead engine, concurrency, body size
    auth: tuple[str, ...] = ()  # headers that may carry the API key (when keys are set)
    model_in: Literal["body", "path"] | None = None  # where it names a model the card serves
    streams: bool = False  # `stream: true` answers with server-sent events
    tiered: bool = False  # its body's `service_tier` picks the tier (else: default)
    # An admitted route that runs no generation (a token count) takes no place in the model's
    # capacity.
    holds_place: bool = True
    errors: tuple[int, ...] = ()  # statuses besides 200, for the OpenAPI document
    # Its handler works on the store (files, batches): its services are the store's, there
    # from the start, loading or not; the query's parameters come with the path's.
    store: bool = False
    # Its body is streamed to the handler as it arrives (`BodyStream`: a file upload), not read
    # whole by admission.
    upload: bool = False
    query: tuple[str, ...] = ()  # the query's parameters, for the OpenAPI document
    raw: str | None = None  # the media type of its raw answer (`Raw`), instead of `response`
    lora: bool = False  # its handler adds, removes or lists LoRA adapters (`LoraServices`)
    # (mount + template, its pattern or None): where it is served.
    paths: tuple[tuple[str, re.Pattern[str] | None], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        paths = tuple((m + self.path, _pattern(m + self.path)) for m in self.family.mounts)
        object.__setattr__(self, "paths", paths)

    @property
    def parameters(self) -> tuple[str, ...]:
        """Its path parameters' names, in order."""
        return tuple(m[1] for m in _PARAMETER.finditer(self.path))

    def path_for(self, params: Mapping[str, str]) -> str:
        """Its path (under its family's first mount) with `params` filled in."""
        return _PARAMETER.sub(lambda m: params[m[1]], self.paths[0][0])

    def match(self, path: str) -> Mapping[str, str] | None:
        """`path`'s parameters when this route serves it, else None."""
        for template, pattern in self.paths:
            if pattern is None:
                if path == template:
                    return {}
            elif (m := pattern.fullmatch(path)) is not None:
                return m.groupdict()
        return None


class RouteTable:
    """(method, path) -> route: paths without parameters by lookup, templates by the longest
    literal prefix first. A method and path template declared twice raises."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._exact: dict[str, dict[str, Route]] = {}
        templates: list[tuple[str, re.Pattern[str], Route]] = []
        seen: set[tuple[str, str]] = set()
        for route in routes:
            if route.body is not None and not route.admitted:
                # Admission reads a body whole (bounded) before the dispatcher validates it.
                raise ValueError(f"{route.path}: a route with a body must pass admission")
            for template, pattern in route.paths:
                key = (route.method, _PARAMETER.sub("{}", template))
                if key in seen:
                    raise ValueError(f"{route.method} {template}: declared twice")
                seen.add(key)
                if pattern is None:
                    self._exact.setdefault(template, {})[route.method] = route
                else:
                    templates.append((template[: template.index("{")], pattern, route))
        self._templates = sorted(templates, key=lambda t: -len(t[0]))

    def _on(self, path: str) -> dict[str, Route]:
        """The routes serving `path`, by method."""
        routes = self._exact.get(path)
        if routes is not None:
            return routes
        found: dict[str, Route] = {}
        for prefix, pattern, route in self._templates:
            if path.startswith(prefix) and route.method not in found and pattern.fullmatch(path):
                found[route.method] = route
        return found

    def classify(self, method: str, path: str) -> Route | None:
        """The route serving `method` on `path`; another method's route on that path (the
        dispatcher answers 405); None for a path no API route serves (FastAPI's)."""
        routes = self._on(path)
        return routes.get(method) or next(iter(routes.values()), None)

    def allowed(self, path: str) -> tuple[str, ...]:
        """The methods `path` is served with."""
        return tuple(self._on(path))
