"""Load a topology YAML file into a validated ``TopologySpec``, or explain exactly what is wrong."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from topology import names, routing
from topology.errors import TopologyFileError
from topology.reserved import TASKQ, Reservation, public_overlap, reservations, reserving
from topology.settings import LocationSettings, read_section
from topology.spec import BUILTIN_GROUP_DEFAULTS, EVENT, SAMPLE_EVENT, GroupSpec, TopologySpec

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
_NAME_RULE = "lowercase letters, digits, '_' or '-', starting with a letter"


def topology_path(locations: LocationSettings | None = None) -> Path:
    """Return the topology file in force: ``TASKQ_TOPOLOGY`` or the packaged default."""
    chosen = (locations or read_section(LocationSettings)).topology.strip()
    return Path(chosen or str(resources.files("topology").joinpath("default.yaml")))


def load_topology(path: Path | str | None = None) -> TopologySpec:
    """Read, parse and validate a topology file; a TopologyFileError names each bad key, its line and the fix."""
    file = Path(path) if path is not None else topology_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        hint = "create it, or point TASKQ_TOPOLOGY at an existing topology file"
        raise TopologyFileError(str(file), [f"file not found; {hint}"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyFileError(str(file), [f"cannot read the file: {exc}"]) from exc
    return parse_topology(text, source=str(file))


def parse_topology(text: str, *, source: str = "<string>") -> TopologySpec:
    """Parse and validate topology YAML held in ``text`` (errors name ``source``)."""
    data, lines = _read_yaml(text, source)
    return _Validator(source, lines).validate(data)


class _Validator:
    """Validates one parsed file, collecting every problem before raising."""

    def __init__(self, source: str, lines: dict[Path_, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[str] = []

    def validate(self, data: Any) -> TopologySpec:
        if not isinstance(data, dict):
            raise TopologyFileError(
                self.source, ["the file must be a mapping with at least a 'groups' key"]
            )
        known = set(TopologySpec.model_fields) | {"defaults"}
        for key in data:
            if key not in known:
                self._add((key,), _unknown_key(key, known))
        defaults = self._defaults(data.get("defaults", {}))
        groups = self._groups(data.get("groups"), defaults)
        top = {k: v for k, v in data.items() if k in TopologySpec.model_fields and k != "groups"}
        spec = self._model(TopologySpec, {**top, "groups": groups}, ())
        if spec is not None:
            self._check_names(spec)
            self._check_jobs(spec)
        if self.problems or spec is None:
            raise TopologyFileError(self.source, self.problems)
        return spec

    def _defaults(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self._add(("defaults",), "must be a mapping of group settings")
            return copy.deepcopy(BUILTIN_GROUP_DEFAULTS)
        if "jobs" in raw:
            self._add(("defaults", "jobs"), "job types belong to a group, not to defaults")
        merged = _deep_merge(BUILTIN_GROUP_DEFAULTS, {k: v for k, v in raw.items() if k != "jobs"})
        self._model(GroupSpec, {**merged, "jobs": ["placeholder"]}, ("defaults",))
        return merged

    def _groups(self, raw: Any, defaults: dict[str, Any]) -> dict[str, GroupSpec]:
        if not isinstance(raw, dict) or not raw:
            self._add(
                ("groups",), "declare at least one group, e.g. groups: {email: {jobs: [email]}}"
            )
            return {}
        out: dict[str, GroupSpec] = {}
        for name, body in raw.items():
            where: Path_ = ("groups", name)
            if not isinstance(body, dict):
                self._add(where, "must be a mapping with at least 'jobs'")
                continue
            group = self._model(GroupSpec, _deep_merge(defaults, body), where)
            if group is not None:
                out[str(name)] = group
        takes_callbacks = any(
            routing.matches(p, names.CALLBACK_JOB_TYPE) for g in out.values() for p in g.jobs
        )
        if names.CALLBACKS_GROUP not in out and not takes_callbacks:
            try:
                builtin = GroupSpec.model_validate(_deep_merge(defaults, BUILTIN_CALLBACKS_GROUP))
            except ValidationError:
                return out  # the defaults are wrong, and that is reported under defaults
            out[names.CALLBACKS_GROUP] = builtin
        return out

    def _model(self, model: type[M], data: Any, where: Path_) -> M | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                self._add((*where, *error["loc"]), _explain(error, model))
            return None

    def _check_names(self, spec: TopologySpec) -> None:
        if not names.NAMESPACE_RE.fullmatch(spec.namespace) or spec.namespace.startswith("amq"):
            self._add(
                ("namespace",),
                f"{spec.namespace!r} is not a valid namespace; use 1-40 {_NAME_RULE} (and not 'amq', "
                "which RabbitMQ reserves)",
            )
        kinds = {
            "groups": "group",
            "webhooks": "source",
            "streams": "source",
            "schedules": "schedule",
        }
        for key, what in kinds.items():
            for name in getattr(spec, key):
                if not names.NAME_RE.fullmatch(name):
                    self._add(
                        (key, name), f"{name!r} is not a valid {what} name; use 1-48 {_NAME_RULE}"
                    )
                elif key == "groups" and name in names.RESERVED_GROUPS:
                    reserved = ", ".join(sorted(names.RESERVED_GROUPS))
                    self._add((key, name), f"{name!r} is reserved ({reserved}); rename the group")

    def _check_jobs(self, spec: TopologySpec) -> None:
        owners = [(g, job) for g, group in spec.groups.items() for job in group.jobs]
        for i, (group_a, job_a) in enumerate(owners):
            for group_b, job_b in owners[i + 1 :]:
                key = routing.overlap(job_a, job_b) if group_a != group_b else None
                if key is not None:
                    self._add(
                        ("groups", group_b, "jobs"),
                        f"{job_b!r} overlaps {job_a!r} of group {group_a!r} (both take job type "
                        f"{key!r}); a job type must belong to exactly one group, so narrow one "
                        "of the patterns",
                    )
        reserved = reservations(spec.webhooks.items(), spec.streams.items())
        for name, pattern in owners:
            found = public_overlap(reserved, pattern)
            if found is not None:
                self._add(("groups", name, "jobs"), _reserved_problem(pattern, *found))
        made = [(("webhooks", n, "job"), s.job) for n, s in spec.webhooks.items()]
        made += [(("streams", n, "job"), s.job) for n, s in spec.streams.items()]
        made += [(("schedules", n, "job"), s.job) for n, s in spec.schedules.items()]
        for where, job in made:
            sample = job.replace(EVENT, SAMPLE_EVENT)
            taken = reserving(reserved, job) if where[0] == "schedules" else []
            if taken:
                self._add(
                    where,
                    f"job type {job!r} is reserved ({taken[0].why}); schedule a type of your own",
                )
            elif not any(routing.matches(p, sample) for _, p in owners):
                self._add(
                    where,
                    f"no group takes job type {sample!r}; add {job.replace(EVENT, '#')!r} (or a "
                    "pattern that matches it) to a group's jobs",
                )

    def _add(self, where: Path_, message: str) -> None:
        key = ".".join(str(p) for p in where) or "(top level)"
        line = next((self.lines[c] for c in _candidates(where) if c in self.lines), None)
        self.problems.append(f"{key}{f' (line {line})' if line else ''}: {message}")


def _reserved_problem(pattern: str, reservation: Reservation, shared: str) -> str:
    """Return why group pattern ``pattern`` may not take ``reservation``'s types with public ones."""
    if reservation.producer == TASKQ:
        fix = (
            "narrow it so it takes no taskq.* type (callbacks go to the built-in "
            f"{names.CALLBACKS_GROUP!r} group, or to a group listing {names.CALLBACK_JOB_TYPE!r})"
        )
    else:
        fix = (
            f"narrow it so it takes no reserved type, or list exactly {reservation.produced!r} "
            "in the group that receives them"
        )
    return (
        f"{pattern!r} takes reserved job types such as {shared!r} ({reservation.produced!r}: "
        f"{reservation.why}) as well as public ones; {fix}"
    )


def _candidates(where: Path_) -> Iterator[Path_]:
    """Yield the paths whose line best locates ``where``, most precise first."""
    for end in range(len(where), 0, -1):
        yield where[:end]
        if where[0] == "groups" and end > 2:
            yield ("defaults", *where[2:end])


def _explain(error: ErrorDetails, model: type[BaseModel]) -> str:
    """Turn one pydantic error into a sentence that says what to do."""
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        return _unknown_key(key, _fields_at(model, error["loc"][:-1]))
    if error["type"] == "missing":
        return "is required"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("value_error", "assertion_error"):
        message = f"{message} (got {error.get('input')!r})"
    return message


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> set[str]:
    """Return the field names of the nested model that ``loc`` points into."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return set()
        current = field.annotation
    return set(getattr(current, "model_fields", {}))


BUILTIN_CALLBACKS_GROUP: dict[str, Any] = {
    "jobs": [names.CALLBACK_JOB_TYPE],
    # Endpoints go down for hours: spread ten attempts over about a day, then the DLQ.
    "retry": {"max_attempts": 10, "base": "30s", "factor": 3, "max": "6h", "jitter": "full"},
}
"""The group added when no group takes callback jobs; a group named ``callbacks`` replaces it."""


def _unknown_key(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}known keys: {', '.join(sorted(known))}"


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` laid over it, merging nested mappings."""
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if nested else value
    return copy.deepcopy(out)


def _read_yaml(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML safely, refusing duplicate keys and recording each key's line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise TopologyFileError(source, [f"not valid YAML: {exc}"]) from exc
    if root is None:
        raise TopologyFileError(source, ["the file is empty; declare at least 'groups'"])
    lines: dict[Path_, int] = {}
    ctor = yaml.SafeLoader("")

    def convert(node: yaml.Node, where: Path_) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [convert(n, (*where, i)) for i, n in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            return ctor.construct_object(node, deep=True)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # Keys are names, never values: take the raw text, so a group called `no` or
            # `on` stays a string instead of YAML 1.1's boolean.
            key = (
                key_node.value
                if isinstance(key_node, yaml.ScalarNode)
                else ctor.construct_object(key_node, deep=True)
            )
            path = (*where, key)
            if key in out:
                raise TopologyFileError(
                    source,
                    [
                        f"{'.'.join(str(p) for p in path)} (line {key_node.start_mark.line + 1}): "
                        f"duplicate key, first set on line {lines.get(path)}; YAML would silently "
                        "keep only the last one"
                    ],
                )
            lines[path] = key_node.start_mark.line + 1
            out[key] = convert(value_node, path)
        return out

    return convert(root, ()), lines
