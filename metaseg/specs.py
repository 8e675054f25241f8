"""How an adaptation's mini-batches are drawn, and what an episode is: validated once.

The episode samplers (``metaseg.data.episodes``), the k-shot curves and ``metaseg adapt``
take these two frozen specs instead of a dozen loose options, and the configs build them to
validate their fields (``EvalConfig``, ``MetaConfig``, ``RunConfig``), so every rule about
shots, steps, batches and the FOMAML tail lives here, once. That includes the rule that with
``--replacement`` a batch holds distinct examples, so it cannot be larger than the examples
it is drawn from (REFERENCE.md section 3): :meth:`BatchSpec.check`, and
:meth:`BatchSpec.fitted` where the batch is lowered to a support set of another size.

A spec knows which config field each of its values came from (``fields``: attribute ->
path in ``RunConfig``), so its errors are ``FieldError``\\ s naming that field, and each
command line names its own flag for it. Imports no TensorFlow (the configs use it).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from metaseg.errors import FieldError, field

# attribute -> RunConfig field, for the episodes of meta-training and of evaluation
TRAINING_FIELDS = {"size": "meta.inner_batch", "replacement": "inner.replacement",
                   "augment": "inner.augment", "aug_rate": "inner.aug_rate",
                   "shots": "meta.train_shots", "steps": "meta.inner_iters",
                   "tail": "meta.foml_tail",
                   "tail_with_replacement": "meta.sample_foml_train_val_with_replacement"}
EVALUATION_FIELDS = {"size": "eval.eval_batch", "replacement": "inner.replacement",
                     "augment": "inner.augment", "aug_rate": "inner.aug_rate",
                     "shots": "eval.shots", "steps": "eval.eval_iters"}


def _fields() -> Mapping[str, str]:
    return dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """How the K mini-batches of one adaptation are drawn from its support set.

    ``size`` B examples per batch. Without ``replacement`` the support set is shuffled and
    walked through, reshuffled whenever it runs out; with it, every batch is a fresh draw of
    B distinct examples. With ``augment`` each batch slot is augmented with probability
    ``aug_rate``, independently.
    """

    size: int
    replacement: bool = False
    augment: bool = False
    aug_rate: float = 0.5
    fields: Mapping[str, str] = _fields()  # attribute -> config field, for the errors

    def __post_init__(self):
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "aug_rate", float(self.aug_rate))
        if self.size < 1:
            raise FieldError(self.field_of("size"),
                             f"{self._name('size')} must be positive, got {self.size}")
        if not 0.0 <= self.aug_rate <= 1.0:
            raise FieldError(self.field_of("aug_rate"),
                             f"{self._name('aug_rate')} must be in [0, 1], got {self.aug_rate}")

    def field_of(self, attribute: str) -> str:
        """The config field ``attribute`` came from (the attribute's name if unknown)."""
        return self.fields.get(attribute, attribute)

    def _name(self, attribute: str) -> str:
        return field(self.field_of(attribute))

    def check(self, support: int, *, drawn_from: Optional[str] = None) -> None:
        """FieldError unless a batch fits ``support`` examples: with ``replacement`` a batch
        holds distinct examples, so ``size <= support``. ``drawn_from``: what the support set
        is, in fields (e.g. ``field("eval.shots")``); default ``the N support examples``."""
        if self.replacement and self.size > support:
            what = f"{drawn_from} ({support})" if drawn_from else f"the {support} support examples"
            replacement = self._name("replacement")
            raise FieldError(self.field_of("size"),
                             f"{self._name('size')} ({self.size}) must be <= {what} with "
                             f"{replacement} (a batch holds distinct examples); lower it or "
                             f"drop {replacement}")

    def fitted(self, support: int) -> "BatchSpec":
        """This spec, or with ``replacement`` and more than ``support`` examples per batch,
        one whose batches are the whole support set: for the adaptations whose support set
        is not the configured one (``metaseg adapt``'s, the k-shot curves' k images)."""
        if not self.replacement or self.size <= support:
            return self
        return dataclasses.replace(self, size=support)

    @classmethod
    def evaluation(cls, config, inner=None, *, batch_size: Optional[int] = None,
                   aug_rate: Optional[float] = None,
                   fields: Optional[Mapping[str, str]] = None) -> "BatchSpec":
        """The batches of an evaluation adaptation: ``EvalConfig`` ``config``'s batch size,
        ``InnerConfig`` ``inner``'s replacement and augmentation (None: neither), or the
        values given (e.g. UHO's sampled ones)."""
        return cls(config.eval_batch if batch_size is None else batch_size,
                   bool(inner and inner.replacement), bool(inner and inner.augment),
                   (inner.aug_rate if inner else 0.5) if aug_rate is None else aug_rate,
                   fields={**EVALUATION_FIELDS, **(fields or {})})


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """What one episode is: ``shots`` examples of a task, adapted to in ``steps`` inner steps
    on mini-batches drawn as ``batches`` says (REFERENCE.md sections 3, 6 and 7).

    FOMAML's ``tail``: the last step trains on ``tail`` shots held out of the others (or,
    with ``tail_with_replacement``, both parts drawn with replacement from the shots), so the
    first ``steps - 1`` batches come from ``shots - tail`` examples.
    """

    shots: int
    steps: int
    batches: BatchSpec
    tail: Optional[int] = None
    tail_with_replacement: bool = False
    fields: Mapping[str, str] = _fields()

    def __post_init__(self):
        object.__setattr__(self, "shots", int(self.shots))
        object.__setattr__(self, "steps", int(self.steps))
        if self.shots < 1:
            raise FieldError(self._path("shots"),
                             f"{field(self._path('shots'))} must be positive, got {self.shots}")
        if self.steps < 0:
            raise FieldError(self._path("steps"),
                             f"{field(self._path('steps'))} must be >= 0, got {self.steps}")
        if self.tail is not None:
            self._check_tail()
        if self.steps:  # no step, no batch to fill
            self.batches.check(self.support, drawn_from=self._drawn_from())

    def _path(self, attribute: str) -> str:
        return self.fields.get(attribute, attribute)

    def _check_tail(self) -> None:
        tail, shots, steps = field(self._path("tail")), field(self._path("shots")), \
            field(self._path("steps"))
        if self.tail < 1:
            raise FieldError(self._path("tail"), f"{tail} must be positive, got {self.tail}")
        if self.tail >= self.shots:
            raise FieldError(self._path("tail"),
                             f"{tail} ({self.tail}) must be smaller than {shots} ({self.shots})"
                             ": the tail is held out of the training shots")
        if self.steps < 1:
            raise FieldError(self._path("steps"),
                             f"{steps} must be positive with {tail}: the tail is the last "
                             f"step, got {self.steps}")

    def _drawn_from(self) -> str:
        shots = field(self._path("shots"))
        return f"{shots} minus {field(self._path('tail'))}" if self.tail else shots

    @property
    def support(self) -> int:
        """Examples the (first) batches are drawn from: the shots, minus the tail."""
        return self.shots - (self.tail or 0)

    @property
    def batch_steps(self) -> int:
        """Mini-batches drawn from the support set: ``steps``, minus the tail step."""
        return self.steps - 1 if self.tail else self.steps

    @classmethod
    def training(cls, meta, inner=None) -> "EpisodeSpec":
        """A meta-training episode of ``MetaConfig`` ``meta`` and ``InnerConfig`` ``inner``
        (None: no replacement, no augmentation)."""
        return cls(meta.train_shots, meta.inner_iters, BatchSpec(
            meta.inner_batch, bool(inner and inner.replacement), bool(inner and inner.augment),
            inner.aug_rate if inner else 0.5, fields=TRAINING_FIELDS), tail=meta.foml_tail,
            tail_with_replacement=meta.sample_foml_train_val_with_replacement,
            fields=TRAINING_FIELDS)

    @classmethod
    def evaluation(cls, config, inner=None, *, shots: Optional[int] = None,
                   steps: Optional[int] = None, batch_size: Optional[int] = None,
                   aug_rate: Optional[float] = None,
                   fields: Optional[Mapping[str, str]] = None) -> "EpisodeSpec":
        """An evaluation episode of ``EvalConfig`` ``config`` and ``InnerConfig`` ``inner``
        (None: no replacement, no augmentation), with the values given instead of the
        config's (UHO's sampled ones, ``metaseg adapt``'s support set and ``--steps``)."""
        fields = {**EVALUATION_FIELDS, **(fields or {})}
        batches = BatchSpec.evaluation(config, inner, batch_size=batch_size, aug_rate=aug_rate,
                                       fields=fields)
        return cls(config.shots if shots is None else shots,
                   config.eval_iters if steps is None else steps, batches, fields=fields)
