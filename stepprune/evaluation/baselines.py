"""bench's training-free baselines: the base model under another decoding or prompt, run like a
model and shown in every table and plot (``--baseline NAME=SPEC``).

- ``budget:N``: budget forcing (s1, arXiv 2501.19393; ``generation.budget``): the completion is
  cut at N tokens and the answer forced with eval's lead-in; answer tokens count in LEN.
- ``budget:match=MODEL``: N is MODEL's mean thinking tokens on that benchmark, so a trained
  model meets truncation at its own cost (paired against it as well as against the base).
- ``nothink``: NoThinking (arXiv 2504.09858). A reasoning model (its chat template opens
  ``<think>``) gets the thinking prefilled as closed: "Okay, I think I have finished
  thinking." then ``</think>``. An instruct model without think tags gets a direct-answer prompt
  instead (``DIRECT``): the problem, then "Give only the final answer ..., with no reasoning".
- ``prompt:NAME``: the problem under another instruction: ``cod``, Chain of Draft (arXiv
  2502.18600; its instruction verbatim, with our boxed-answer request), ``concise`` (a plain
  "be concise"), or any other text: a template if it holds ``{problem}``, else an instruction
  written after the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepprune.cot.steps import THINK_OPEN
from stepprune.evaluation.bench_layout import check_entry_name

COD = (
    "Think step by step, but only keep a minimum draft for each thinking step, with 5 words at "
    "most."
)
BOXED = "put your final answer within \\boxed{{}}."
PROMPTS = {
    "cod": f"{{problem}}\n\n{COD} Separate the drafts with blank lines, and {BOXED}",
    "concise": f"{{problem}}\n\nBe concise. Reason step by step, briefly, and {BOXED}",
}
DIRECT = "{problem}\n\nGive only the final answer, within \\boxed{{}}, with no reasoning."
NOTHINK = "Okay, I think I have finished thinking.\n</think>\n\n"


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str  # budget | match | nothink | prompt
    budget: int | None = None
    match: str | None = None
    template: str | None = None


def parse_baseline(item: str) -> Baseline:
    """``NAME=SPEC`` (module docstring); a one-line ValueError naming the item otherwise."""
    name, sep, spec = str(item).partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ValueError(f"baseline {item!r}: expected NAME=SPEC (budget:N, nothink, prompt:cod)")
    check_entry_name("baseline", name)
    kind, _, arg = spec.partition(":")
    if kind == "nothink" and not arg:
        return Baseline(name, "nothink")
    if kind == "budget" and arg.startswith("match="):
        return Baseline(name, "match", match=arg.removeprefix("match=").strip())
    if kind == "budget" and arg.isdigit() and int(arg) > 0:
        return Baseline(name, "budget", budget=int(arg))
    if kind == "prompt" and arg:
        template = PROMPTS.get(arg, arg if "{problem}" in arg else f"{{problem}}\n\n{arg}")
        from stepprune.data.prompts import check_template

        check_template(template)
        return Baseline(name, "prompt", template=template)
    raise ValueError(
        f"baseline {item!r}: SPEC is budget:N (N > 0), budget:match=MODEL, nothink or "
        f"prompt:NAME ({', '.join(PROMPTS)} or your own text)"
    )


def generate_overrides(b: Baseline, style: str, budget: float | None = None) -> dict:
    """The generate-config fields that make the base model run baseline ``b``; ``style``:
    ``thinking_style`` of the base model; ``budget``: a ``match`` baseline's budget on this
    benchmark."""
    if b.kind == "budget":
        return {"thinking_budget": b.budget}
    if b.kind == "match":
        return {"thinking_budget": max(1, int(round(budget)))}
    if b.kind == "nothink":
        if style == "opens":
            return {"prompt_prefill": NOTHINK}
        if style == "tags":
            return {"prompt_prefill": THINK_OPEN + "\n" + NOTHINK}
        return {"prompt_template": DIRECT}
    return {"prompt_template": b.template}


def thinking_style(tokenizer, system_prompt=None) -> str:
    """``opens``: the chat template opens the thinking itself (R1's ``<think>`` prefill);
    ``tags``: the template knows think tags, which the model writes; ``none``: an instruct
    model without them."""
    from stepprune.data.prompts import chat_prompt

    messages = chat_prompt("x", "{problem}", system_prompt)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if text.rstrip().endswith(THINK_OPEN):
        return "opens"
    return "tags" if THINK_OPEN in str(tokenizer.chat_template or "") else "none"
