"""Label one partition in a child process with the tiny LM, for the crash and race tests.

    python -m tests.support.partition_worker GROUP SPLIT [--kill-after-waves N] [--lease SECONDS]

It prints the outcome (done, already_done, claim_lost or busy) on its last line. With ``--kill-after-waves N`` it
sends itself SIGKILL right after its N-th wave has been checkpointed: a crash nothing can clean up after.
The store is found through LABELLING_MONGODB_URI.
"""

from __future__ import annotations

import argparse
import os
import signal

from labelling import config as job_config
from labelling.config import JobConfig
from labelling.fleet.runner import LabellerFactory


def tiny_labeller_factory(max_batch_tokens: int | None = None) -> LabellerFactory:
    """Labellers around one tiny random Llama (built like conftest's ``tiny_lm``) and the real MiniLM embedder;
    ``max_batch_tokens`` None takes the engine's default budget."""
    from labelling.engine.lm import LanguageModel
    from labelling.method import build
    from labelling.method.labeller import PartitionLabeller
    from tests.support.tiny_models import smollm2_tokenizer, tiny_llama

    model = tiny_llama()
    model.config.max_position_embeddings = 8192  # RoPE has no table to outgrow; prompts carry a ~2k-token preamble
    lm = LanguageModel.from_model(model, smollm2_tokenizer(), max_batch_tokens=max_batch_tokens)

    def make(config, schema):
        """A fresh labeller (empty indexes) around the shared tiny LM."""
        dst, act = build.example_index(config.dst, "dst"), build.example_index(config.act_tag, "act")
        return PartitionLabeller(config, schema, lm, lm, dst, act)

    return make


def tiny_job() -> JobConfig:
    """cpu-small settings shrunk so the tiny LM labels a turn in well under a second (conftest's ``fast_job`` as a function).

    The machinery's tests decode as the reference does (noisy channel, unconstrained), whatever cpu-small's default.
    """
    job = job_config.with_reference_decoding(job_config.load(profile="cpu-small"))
    for module in (job.dst, job.act_tag):
        module.generation_cfg.sampling_args.n = 3
        module.generation_cfg.sampling_args.max_new_tokens = 8
        module.retriever.k_examples = 2
        module.retriever.example_warmup = 1
    return job


def label(group: str, split: str, factory: LabellerFactory, **options) -> str:
    """Run the partition and name the outcome: done, already_done, claim_lost or busy."""
    from labelling.fleet import runner, store

    try:
        return runner.run_partition(group, split, f"pid-{os.getpid()}", labeller_factory=factory, **options).status
    except store.ClaimLost:
        return "claim_lost"
    except store.PartitionBusy:
        return "busy"


def _killer(after_waves: int):
    waves = 0

    def on_progress(done: int, total: int) -> None:
        """Called after each checkpointed wave: die on the chosen one."""
        nonlocal waves
        waves += 1
        if waves == after_waves:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_progress


def main() -> None:
    """Parse the arguments, run the partition and print the outcome."""
    parser = argparse.ArgumentParser()
    parser.add_argument("group")
    parser.add_argument("split")
    parser.add_argument("--kill-after-waves", type=int, default=0)
    parser.add_argument("--lease", type=float, default=None)
    args = parser.parse_args()
    hook = _killer(args.kill_after_waves) if args.kill_after_waves else None
    print(label(args.group, args.split, tiny_labeller_factory(), on_progress=hook, lease_s=args.lease))


if __name__ == "__main__":
    main()
