"""Quality benchmark: label a fixed held-out slice of the bundled corpus under several configurations and score them.

The slice (``HELD_OUT``) is named here and never changes, and no default run, demo or test labels it, so a
configuration chosen with this table has not been tuned on it. Each configuration is a set of overrides laid over
one job (greedy vs noisy channel, with and without schema constraints where the config has that switch); the
always-empty predictor (empty state, no acts) is scored beside them as the floor any useful labeller must beat.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labelling.bench.tables import markdown_table
from labelling.config import ConfigError, JobConfig
from labelling.corpus import bundled_splits, first_dialogues
from labelling.method.metrics import METRIC_TITLES, MetricsAccumulator

if TYPE_CHECKING:
    from labelling.method.canonical import Canonicaliser
    from labelling.records import TurnLabel
    from labelling.turns import Turn

HELD_OUT_SPLIT = "train_900_950"  # as `labelling ingest` cuts the bundled corpus into splits of 50 dialogues
HELD_OUT_DIALOGUES = 9  # its first 9 dialogues: 67 turns
HELD_OUT = f"the first {HELD_OUT_DIALOGUES} dialogues of {HELD_OUT_SPLIT} of the bundled MultiWOZ 2.1 dev set"
CONSTRAIN_KEY = "constrain_to_schema"  # the schema-constrained sampling switch, per module
BASELINE = "always-empty"
MODULES = ("dst", "act_tag")
# Parser messages that mean a sample used a name the schema lacks (intent, slot, act type, entity class or field).
OFF_SCHEMA_MARKERS = ("unknown intent", "unknown argument", "not an act", "unknown entity", "unknown field", "unknown service")
NO_CHANGE_LABEL = "[agent.no_change()]"
# (column key, header, format) of the table; the first figure is the headline.
COLUMNS = (
    *((key, METRIC_TITLES[key], "{:.3f}") for key in ("jga", "jga_fuzzy", "turn_acc", "state_f1", "acts_f1", "act_types_f1")),
    ("off_schema", "off-schema", "{:.1%}"),
    ("cut", "cut", "{:.1%}"),
    ("no_change", "no-change share", "{:.1%}"),
    ("seconds_per_turn", "s/turn", "{:.1f}"),
)


def configurations(job: JobConfig) -> dict[str, dict]:
    """Name -> per-module overrides: greedy, noisy channel (the job's own channel modes) and a vote of the samples,
    each also constrained (``ModuleConfig.constrain_to_schema``). Overrides are plain data so the JSON report records
    exactly what ran."""
    from labelling.method.channel import CONDITIONAL, JOINT

    modes = {m: getattr(job, m).generation_cfg.generation_mode for m in MODULES}
    channel = {m: (mode if mode in (JOINT, CONDITIONAL) else _default_channel(m)) for m, mode in modes.items()}
    out = {
        "greedy": {m: {"generation_cfg": {"generation_mode": "greedy"}} for m in MODULES},
        "noisy channel": {m: {"generation_cfg": {"generation_mode": channel[m]}} for m in MODULES},
        "vote": {m: {"generation_cfg": {"generation_mode": "vote"}} for m in MODULES},
    }
    for name in list(out):  # the switch is set both ways, so the job's own default never leaks in
        out[f"{name} + constraints"] = {m: _with_constraints(o, True) for m, o in out[name].items()}
        out[name] = {m: _with_constraints(o, False) for m, o in out[name].items()}
    for conf in out.values():
        for module in conf.values():
            module[RULES_KEY] = "off"
    out.update(_rule_configurations(out))
    out[AS_CONFIGURED] = {}  # the profile and job file's own settings, nothing laid over them
    return out


AS_CONFIGURED = "as configured"


RULES_KEY = "with_rules"  # how a module combines its LM label with the rule labeller's (config.RULE_MERGES)
RULES = "rules"  # the rule labeller alone: no LM


def _rule_configurations(lm: dict[str, dict]) -> dict[str, dict]:
    """The rule labeller alone, and hybrids of it with the constrained greedy LM and the constrained channel: the rules'
    label laid over the LM's (rules first), the LM's over the rules' (LM first), and the rules' label as one more
    channel candidate."""

    def hybrid(base: str, how: str) -> dict:
        out = copy.deepcopy(lm[base])
        for module in out.values():
            module[RULES_KEY] = how
        return out

    return {
        RULES: {m: {"generation_cfg": {"generation_mode": RULES}, RULES_KEY: "off"} for m in MODULES},
        "rules first + greedy LM": hybrid("greedy + constraints", "override"),
        "rules first + greedy LM gaps": hybrid("greedy + constraints", "gaps"),
        "greedy LM + rules fill": hybrid("greedy + constraints", "fill"),
        "rules first + noisy channel LM": hybrid("noisy channel + constraints", "override"),
        "noisy channel + rules candidate": hybrid("noisy channel + constraints", "candidate"),
    }


def _default_channel(module: str) -> str:
    return "noisy_channel_joint" if module == "dst" else "noisy_channel_cond"


def _with_constraints(overrides: dict, on: bool) -> dict:
    out = copy.deepcopy(overrides)
    out[CONSTRAIN_KEY] = on  # a ModuleConfig field
    return out


def apply(job: JobConfig, overrides: Mapping[str, dict]) -> JobConfig:
    """A validated copy of ``job`` with per-module overrides laid over it (the same merge a job file gets)."""
    from labelling import config as job_config

    data = job.to_dict()
    for module, changes in overrides.items():
        if module not in MODULES:
            raise ConfigError(f"quality configuration names module {module!r}", f"modules: {', '.join(MODULES)}")
        data[module] = job_config._merge(data[module], changes)
    out = job_config.from_dict(data)
    for module in overrides:  # a mode override re-derives the token limit that follows the mode
        job_config.follow_mode(module, getattr(job, module), getattr(out, module))
    return out


def held_out_turns(job: JobConfig, limit: int | None = None) -> list[Turn]:
    """The held-out slice's turns in corpus order; ``limit`` keeps the first N (whole dialogue prefixes, for smoke runs)."""
    return split_turns(job, HELD_OUT_SPLIT, HELD_OUT_DIALOGUES, limit)


def split_turns(job: JobConfig, split: str, dialogues: int | None = None, limit: int | None = None) -> list[Turn]:
    """The turns of the first ``dialogues`` dialogues (all when None) of one split of the bundled corpus, in corpus
    order. Settings are chosen on other splits than the held-out one (``--split``), and a pool is seeded from one."""
    splits = bundled_splits(job.load_schema())
    if split not in splits:
        raise ConfigError(f"no split {split!r} in the bundled corpus", f"splits: {', '.join(splits)}")
    turns = first_dialogues(splits[split], dialogues)
    return turns[:limit] if limit is not None else turns


def describe(split: str, dialogues: int | None) -> str:
    """What a run labels, for its report and table: the held-out slice by name, anything else as not it."""
    if (split, dialogues) == (HELD_OUT_SPLIT, HELD_OUT_DIALOGUES):
        return HELD_OUT
    return f"{'all' if dialogues is None else f'the first {dialogues}'} dialogues of {split} (not the held-out slice)"


def pool_examples(turns: Sequence[Turn], labels: Sequence[TurnLabel]) -> list[Turn]:
    """Labelled turns as the example pool holds them (each turn's text with its label, and the acts before it), in the
    labels' order, as a dependent partition's pool holds its seed's labels in labelling order (``store.pool_examples``).
    Every label must belong to one of ``turns``."""
    from labelling.errors import CorpusError
    from labelling.examples import labels_pool  # the one path every seeded pool takes (run --examples too)

    try:
        return labels_pool(turns, labels, "the bundled corpus").examples
    except CorpusError as e:
        raise ConfigError(e.message, "seed the pool from a labelling quality report made with --split on this corpus") from e


@dataclass
class Result:
    """One configuration's figures on the slice: metric summary, off-schema and no-change shares, time, and counts."""

    name: str
    overrides: dict
    turns: int
    seconds: float
    metrics: dict
    samples: int = 0
    off_schema_samples: int = 0
    no_change_turns: int = 0
    cut_samples: int = 0
    errors: dict = field(default_factory=dict)
    choices: list = field(default_factory=list)  # per turn: each module's candidates and choice, for reading by hand
    labels: list = field(default_factory=list)  # TurnLabel.to_dict() per turn: what a later run can seed its pool from

    def figures(self) -> dict:
        """The table's figures plus the raw counts behind them."""
        return {
            **{k: self.metrics[k] for k in ("jga", "jga_fuzzy", "turn_acc", "state_f1", "acts_f1", "act_types_f1")},
            "off_schema": self.off_schema_samples / self.samples if self.samples else None,
            "cut": self.cut_samples / (self.samples + self.cut_samples) if self.samples + self.cut_samples else None,
            "no_change": self.no_change_turns / self.turns if self.turns else 0.0,
            "seconds_per_turn": self.seconds / self.turns if self.turns else 0.0,
            "turns": self.turns,
            "samples": self.samples,
            "off_schema_samples": self.off_schema_samples,
            "cut_samples": self.cut_samples,
            "overrides": self.overrides,
            "metrics": self.metrics,
            "errors": self.errors,
            "choices": self.choices,
            "labels": self.labels,
        }


def score(turns: Sequence[Turn], labels: Sequence[TurnLabel] | None) -> MetricsAccumulator:
    """Score labels against the turns' gold; ``None`` scores the always-empty predictor."""
    by_key = {lab.key: lab for lab in labels or []}
    acc = MetricsAccumulator()
    for turn in turns:
        lab = by_key.get(turn.key)
        acc.add_turn(turn, *((lab.state, lab.delta, lab.acts) if lab else ({}, {}, [])))
    return acc


def off_schema_counts(canon: Canonicaliser, turns: Sequence[Turn], labels: Sequence[TurnLabel]) -> tuple[int, int]:
    """(samples, samples naming something the schema lacks) over both modules, every sample counted once.

    The labeller keeps only the chosen label's parser errors, so each stored raw sample is parsed again; parsing is
    deterministic, so this is what the labeller saw.
    """
    by_key = {t.key: t for t in turns}
    total = bad = 0
    for lab in labels:
        turn = by_key[lab.key]
        text = [turn.last_system_utterance, turn.user_utterance]
        dst = functools.partial(lambda raw, prior, text: canon.dst(raw, prior, text), prior=lab.prior_state, text=text)
        for module, parse in ((lab.dst, dst), (lab.act, canon.acts)):
            for cand in module.candidates:
                for raw in cand.raw:
                    total += 1
                    bad += any(m in e for e in parse(raw).errors for m in OFF_SCHEMA_MARKERS)
    return total, bad


def run_configuration(
    job: JobConfig,
    name: str,
    overrides: dict,
    turns: Sequence[Turn],
    factory: Callable[[JobConfig], object] | None = None,
    on_batch: Callable[[Result], None] | None = None,
    pool: Sequence[Turn] = (),
) -> Result:
    """Label ``turns`` with ``job`` under ``overrides`` in this process; ``factory`` builds the labeller (by default
    ``build.build_labeller``, which shares loaded models across configurations). ``on_batch`` gets the figures over
    the turns labelled so far after every batch, so a long run can be read before it ends. ``pool`` (labelled turns,
    :func:`pool_examples`) is added to the example indexes first; by default the pool starts empty."""
    from labelling.method import build
    from labelling.method.canonical import Canonicaliser

    configured = apply(job, overrides)
    labeller = (factory or build.build_labeller)(configured)
    if pool:
        labeller.add_examples(list(pool))
    canon = Canonicaliser(labeller.schema, configured.dst.retriever.use_normalizer)
    done: list = []
    start = time.perf_counter()

    def figures(labels: list) -> Result:
        labelled = {lab.key for lab in labels}
        scored = [t for t in turns if t.key in labelled]
        acc = score(scored, labels)
        samples, bad = off_schema_counts(canon, scored, labels)
        no_change = sum(lab.dst.chosen == NO_CHANGE_LABEL for lab in labels)
        cut = sum(lab.dst.cut_samples + lab.act.cut_samples for lab in labels)
        seconds = time.perf_counter() - start
        return Result(
            name,
            overrides,
            len(labels),
            seconds,
            acc.summary(),
            samples,
            bad,
            no_change,
            cut,
            acc.errors(top=8),
            choices(labels),
            [lab.to_dict() for lab in labels],
        )

    def batch_done(labels: list) -> None:
        done.extend(labels)
        if on_batch is not None:
            on_batch(figures(done))

    labels = labeller.label(list(turns), on_batch=batch_done)
    return figures(labels)


def choices(labels: Sequence[TurnLabel]) -> list[dict]:
    """Per turn and module: the chosen canonical label and each candidate as [canonical, samples, sample log-prob, score]."""

    def module(out) -> dict:
        cands = [[c.canonical, len(c.raw), round(c.sample_logprob, 3), c.score and round(c.score, 3)] for c in out.candidates]
        return {"chosen": out.chosen, "candidates": cands}

    return [{"turn": f"{lab.dialogue_id}#{lab.turn_id}", "dst": module(lab.dst), "act": module(lab.act)} for lab in labels]


@dataclass(frozen=True)
class Pool:
    """An example pool taken from an earlier quality report: the examples, and whose labels they are."""

    examples: list[Turn]
    source: str  # the report's split
    configuration: str  # the report's configuration whose labels these are
    lm: str  # the model that made them ("gold" for benchmarks/gold_pool.py)

    @property
    def note(self) -> str:
        """One line for the terminal and the report's setup."""
        return f"{len(self.examples)} labels of {self.source} ({self.configuration}, lm {self.lm})"


def report_pool(rep: dict, turns_of: Callable[[str], Sequence[Turn]], split: str) -> Pool:
    """The example pool in an earlier quality report (``labelling quality --out``): the labels of its first labelled
    configuration, as pool examples. ``turns_of(split)`` gives a split's turns. A report on ``split`` itself is
    refused: a pool must not hold the turns it is about to label."""
    setup = rep.get("setup", {})
    source = setup.get("split", HELD_OUT_SPLIT)
    if source == split:
        raise ConfigError(f"the pool report labelled {source}, the split this run labels", "seed the pool from another split")
    named = [(name, fig) for name, fig in rep.get("configurations", {}).items() if name != BASELINE and fig.get("labels")]
    if not named:
        raise ConfigError("the pool report holds no labels", "rerun labelling quality on another split with this version")
    from labelling.records import TurnLabel

    name, figures = named[0]
    labels = [TurnLabel.from_dict(d) for d in figures["labels"]]
    return Pool(pool_examples(turns_of(source), labels), source, name, str(setup.get("lm")))


def baseline(turns: Sequence[Turn]) -> Result:
    """The always-empty predictor: empty state and no acts on every turn."""
    acc = score(turns, None)
    return Result(BASELINE, {}, len(turns), 0.0, acc.summary(), 0, 0, len(turns), 0, acc.errors(top=8))


def gold_no_change_share(turns: Sequence[Turn]) -> float:
    """Share of turns whose gold state does not change: what a faithful labeller's no-change share should be near."""
    scored = [t for t in turns if t.has_gold_state]
    return sum(not t.turn_slot_values for t in scored) / len(scored) if scored else 0.0


def report(results: Sequence[Result], setup: dict) -> dict:
    """The JSON report: the setup and each configuration's figures, in run order."""
    return {"setup": setup, "configurations": {r.name: r.figures() for r in results}}


def table_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per configuration, shared by the terminal and markdown tables."""
    header = ["configuration", *(title for _, title, _ in COLUMNS)]
    rows = []
    for name, figures in rep["configurations"].items():
        cells = ["-" if figures[key] is None else fmt.format(figures[key]) for key, _, fmt in COLUMNS]
        rows.append([name, *cells])
    return header, rows


def markdown(rep: dict) -> str:
    """The report as a markdown table, with the setup on one line above it."""
    return markdown_table(rep["setup"], *table_rows(rep))
