"""Which candidates become variables: the recommended ones unless the user says otherwise."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from tb_unfreeze.analysis import Inspection
from tb_unfreeze.candidates import Candidate
from tb_unfreeze.errors import SelectionError


@dataclasses.dataclass
class Selection:
    """A user's choice. `only` replaces the default set; `exclude` removes from it; `trainable` overrides flags.

    Names are Const node names as `inspect` reports them (a variable name is accepted too).
    """

    only: Iterable[str] | None = None
    exclude: Iterable[str] = ()
    trainable: Mapping[str, bool] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "only": sorted(self.only) if self.only is not None else None,
            "exclude": sorted(self.exclude),
            "trainable": dict(self.trainable),
        }


@dataclasses.dataclass
class Chosen:
    candidate: Candidate
    trainable: bool


def _resolve(inspection: Inspection, names: Iterable[str], what: str) -> list[Candidate]:
    by_name = {c.name: c for c in inspection.candidates}
    by_var = {c.variable_name: c for c in inspection.candidates}
    found, unknown = [], []
    for name in names:
        c = by_name.get(name) or by_var.get(name)
        (found if c else unknown).append(c or name)
    if unknown:
        raise SelectionError(
            f"{what} names {len(unknown)} node(s) that are not candidates in {inspection.graph.path} "
            f"(first: '{unknown[0]}'); run `tb-unfreeze inspect` to list the candidates."
        )
    return found


def choose(inspection: Inspection, selection: Selection | None) -> list[Chosen]:
    """The candidates to convert, in graph order, with their final `trainable` flags."""
    selection = selection or Selection()
    if selection.only is not None:
        picked = {c.name for c in _resolve(inspection, selection.only, "--only")}
    else:
        picked = {c.name for c in inspection.candidates if c.recommended}
    picked -= {c.name for c in _resolve(inspection, selection.exclude, "--exclude")}
    overrides = {
        c.name: bool(selection.trainable[key])
        for key, c in zip(selection.trainable, _resolve(inspection, selection.trainable, "trainable overrides"))
    }
    return [Chosen(c, overrides.get(c.name, c.trainable)) for c in inspection.candidates if c.name in picked]
