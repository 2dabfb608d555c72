"""Convert the rule pack to Elasticsearch queries (Lucene, ES|QL, EQL) for hunting.

Same pipeline as the matcher (``detectors/pipelines/ics_ecs.yml``), same placeholder values,
through pysigma-backend-elasticsearch. Every query targets one index or alias, the
deployment's events alias (``icsmon-events`` unless the pipeline config's
``index_prefix`` says otherwise, or what the caller names): ES|QL names it in its ``from``,
Lucene and EQL carry it beside the query, with the request that runs it (``Query.request``). Correlations the backend cannot express correctly
are skipped with a reason rather than emitted wrong: Lucene has no correlations, EQL gets
value_count and temporal_ordered wrong, ES|QL has no temporal_ordered. Base rules that only
feed correlations are not emitted on their own (as ``sigma convert -o`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sigma.backends.elasticsearch import EqlBackend, ESQLBackend, LuceneBackend
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from detectors.sigma.loader import SHIPPED_RULES, make_pipeline, resolve_placeholders, rule_files

TARGETS = ("lucene", "esql", "eql")

#: The events alias of a deployment with the default index prefix (pipeline.kinds).
DEFAULT_INDEX = "icsmon-events"

_BACKENDS = {"lucene": LuceneBackend, "esql": ESQLBackend, "eql": EqlBackend}

# Correlation types each target converts correctly (see the module docstring).
_CORRELATIONS = {
    "lucene": frozenset(),
    "eql": frozenset({"event_count", "temporal"}),
    "esql": frozenset({"event_count", "value_count", "temporal"}),
}


@dataclass(slots=True)
class Query:
    rule_id: str
    title: str
    path: str
    query: str
    target: str = "lucene"
    index: str = DEFAULT_INDEX

    def request(self) -> dict[str, object]:
        """The Elasticsearch request that runs this query: method, path and JSON body."""
        if self.target == "esql":  # the index is in the query's ``from``
            return {"method": "POST", "path": "/_query", "body": {"query": self.query}}
        if self.target == "eql":
            return {
                "method": "POST",
                "path": f"/{self.index}/_eql/search",
                "body": {"query": self.query},
            }
        return {
            "method": "POST",
            "path": f"/{self.index}/_search",
            "body": {"query": {"query_string": {"query": self.query}}},
        }


@dataclass(slots=True)
class Conversion:
    target: str
    queries: list[Query] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (path, rule id, reason)
    errors: list[tuple[str, str, str]] = field(default_factory=list)


def convert(
    target: str,
    rules_dir: Path | None = None,
    site_config: Path | None = None,
    placeholders: Mapping[str, list[str]] | None = None,
    index: str = DEFAULT_INDEX,
) -> Conversion:
    """The rules of ``rules_dir`` (None: the shipped pack) as ``target`` queries over
    ``index`` (an index, alias or pattern holding icsmon events)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    if not index or any(c in index for c in ' ,"|\n'):
        raise ValueError(f"index {index!r}: one index, alias or pattern name, without spaces")
    values = resolve_placeholders(site_config, placeholders)
    pipeline = make_pipeline(values)
    for item in pipeline.items:
        if item.identifier == "ics_index":  # the pipeline file's default, for sigma-cli
            item.transformation.val = index  # type: ignore[attr-defined]
    backend = _BACKENDS[target](processing_pipeline=pipeline)
    files = rule_files([rules_dir or SHIPPED_RULES])
    collection = SigmaCollection.load_ruleset(files, collect_errors=True)
    collection.resolve_rule_references()
    result = Conversion(target)
    for err in collection.errors:
        src = getattr(err, "source", None)
        result.errors.append((str(src.path if src else "?"), "", _short(err)))
    # Base rules first: a correlation's query is built from its rules' converted queries.
    items = [r for r in collection.rules if isinstance(r, SigmaRule)]
    items += [r for r in collection.rules if isinstance(r, SigmaCorrelationRule)]
    backend.init_processing_pipeline(backend.default_format)
    for rule in items:
        path = str(rule.source.path) if rule.source and rule.source.path else "?"
        rid = str(rule.id or rule.name or rule.title)
        try:
            if isinstance(rule, SigmaCorrelationRule):
                kind = rule.type.name.lower()
                if kind not in _CORRELATIONS[target]:
                    result.skipped.append(
                        (path, rid, f"{target} cannot express {kind} correlations")
                    )
                    continue
                queries = backend.convert_correlation_rule(rule, backend.default_format)
            else:
                queries = backend.convert_rule(rule, backend.default_format)
        except (SigmaError, NotImplementedError) as exc:
            result.errors.append((path, rid, _short(exc)))
            continue
        for q in queries:
            result.queries.append(Query(rid, rule.title, path, str(q), target, index))
    return result


def _short(exc: BaseException) -> str:
    # pySigma appends "(while converting rule ...)" and sometimes a whole rule dump.
    text = str(exc).split(" (while ")[0].splitlines()[0]
    return text if len(text) <= 300 else text[:297] + "..."
