"""Where a model's weights came from, as ``model.json`` records it: the training run
(``training``, with the weight-averaging variant exported) and, for a model fitted to a site by
``pneumo adapt``, the adaptation (``adaptation``).

Typed for the code that reads them (``meta.training.variant.name``), and read-only mappings of
their JSON form as well, so that ``meta.training["threshold_method"]`` and
``TrainConfig.from_dict({**meta.training})`` read what they always read. Older ``model.json``
files, and keys this version does not know, still read: unknown keys are kept and written back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class _JsonView(Mapping):
    """Read access by the keys of ``to_dict()``, the form ``model.json`` holds."""

    def to_dict(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=True)
class Variant(_JsonView):
    """Which averaging of which runs the weights are (``pneumo variants --export``)."""

    name: str
    """The variant's name, e.g. ``EMA of weights``."""
    run: str
    """The run its weights were averaged in."""
    soup_runs: tuple[str, ...] = ()
    """Further runs whose weights were averaged in (a uniform soup)."""
    alphas: tuple[float, ...] = ()
    """WiSE-FT mixing weights the variants were drawn from."""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "run": self.run,
            "soup_runs": list(self.soup_runs),
            "alphas": list(self.alphas),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Variant:
        return cls(
            name=str(d["name"]),
            run=str(d.get("run", "")),
            soup_runs=tuple(str(r) for r in d.get("soup_runs") or ()),
            alphas=tuple(float(a) for a in d.get("alphas") or ()),
        )


@dataclass(frozen=True, eq=True)
class TrainingRecord(_JsonView):
    """The resolved training settings the weights were made with and the variant exported."""

    config: Mapping[str, Any] = field(default_factory=dict)
    """``TrainConfig.to_dict()`` of the run (a plain mapping: a model must load even where the
    training settings of its time no longer validate)."""
    variant: Variant | None = None
    """None for the run's own selected weights."""

    def to_dict(self) -> dict:
        d = dict(self.config)
        if self.variant is not None:
            d["variant"] = self.variant.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainingRecord:
        config = {k: v for k, v in d.items() if k != "variant"}
        variant = d.get("variant")
        return cls(config=config, variant=Variant.from_dict(variant) if variant else None)

    def updated(self, **settings: Any) -> TrainingRecord:
        """The same record with ``settings`` replacing those of the config."""
        return TrainingRecord(config={**self.config, **settings}, variant=self.variant)


@dataclass(frozen=True, eq=True)
class Adaptation(_JsonView):
    """How ``pneumo adapt`` fitted the model to a site's films."""

    base_model: str
    """The model directory adapted."""
    base_fingerprint: str
    """The base model's ``data_fingerprint``."""
    mode: str
    """``labeled`` (NORMAL/ and PNEUMONIA/ folders) or ``unlabeled``."""
    n_films: int
    """Site films used."""
    refit: tuple[str, ...] = ()
    """What was fitted again: batchnorm, ood, temperature, threshold."""
    figures: Mapping[str, Any] = field(default_factory=dict)
    """Figures on the site's films, before and after."""
    source: Mapping[str, Any] = field(default_factory=dict)
    """Where the films came from when not a folder (``adapt --from-records``: database,
    record ids, films left out); written beside the other keys."""

    def to_dict(self) -> dict:
        return {
            "base_model": self.base_model,
            "base_fingerprint": self.base_fingerprint,
            "mode": self.mode,
            "n_films": self.n_films,
            "refit": list(self.refit),
            "figures": dict(self.figures),
            **self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Adaptation:
        own = ("base_model", "base_fingerprint", "mode", "n_films", "refit", "figures")
        return cls(
            base_model=str(d["base_model"]),
            base_fingerprint=str(d.get("base_fingerprint", "")),
            mode=str(d["mode"]),
            n_films=int(d["n_films"]),
            refit=tuple(d.get("refit") or ()),
            figures=dict(d.get("figures") or {}),
            source={k: v for k, v in d.items() if k not in own},
        )
