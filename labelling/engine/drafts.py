"""A sample being decoded: its tokens, log-probs and text, where a stop string cut it, and how its text is decoded.

Text is decoded incrementally where the tokenizer allows it (byte-level BPE): ids whose text later tokens cannot change
are settled, so a step costs the same at token 100 as at token 1. :func:`decodes_piecewise` checks that on a probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labelling.engine.generation import Sample

REPLACEMENT = "\ufffd"  # what decoding puts for a character whose bytes are not all there yet
PROBE = "Hello world. It's 3 o'clock , isn't it ?\n  café naïve — 東京 🙂 ok\t[agent.no_change()]"


@dataclass
class Draft:
    """A sample being generated: its tokens, their log-probs, the decoded text and where a stop string cut it.

    `settled` counts the leading ids whose text, `settled_text`, later tokens cannot change: each step decodes only
    the ids after them, so a step costs the same at token 100 as at token 1.
    """

    ids: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # character offset where each token's text begins
    text: str = ""
    cut: int | None = None
    done: bool = False
    settled: int = 0
    settled_text: str = ""

    def finish(self) -> Sample:
        """The sample as the caller sees it: text cut at the stop, and only the tokens that begin before the cut."""
        cut = len(self.text) if self.cut is None else self.cut
        kept = sum(start < cut for start in self.starts)
        return Sample(self.text[:cut].rstrip(), float(sum(self.logps[:kept])), kept, self.done)


def decodes_piecewise(tokenizer) -> bool:
    """Whether decoding ids in pieces, cut where the text so far ends in a whole character, gives the whole decoding.

    True for byte-level BPE (GPT-2, StarCoder, SmolLM2); false when decoding strips or cleans spaces at the start of
    a piece. Checked on a probe text; `_check_text` still compares every finished sample.
    """
    ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    whole = tokenizer.decode(ids, skip_special_tokens=False)
    settled, text = 0, ""
    for end in range(1, len(ids) + 1):
        tail = tokenizer.decode(ids[settled:end], skip_special_tokens=False)
        if tokenizer.decode(ids[:end], skip_special_tokens=False) != text + tail:
            return False
        if not tail.endswith(REPLACEMENT):
            settled, text = end, text + tail
    return text == whole
