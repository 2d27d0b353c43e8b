"""Chat prompts from problems: the user message from a template with one ``{problem}`` field,
plus an optional system message. Shared by generate, score and grpo, so a template means the
same everywhere; a bad template is a ValueError naming the option, raised before any work."""

from __future__ import annotations

DEFAULT_PROMPT = (
    "{problem}\n\nPlease reason step by step, separating the steps with blank lines, "
    "and put your final answer within \\boxed{{}}."
)

INSTRUCT_LEAD_IN = "\n\nTherefore, the final answer is $\\boxed{"
THINK_LEAD_IN = "\n</think>\n\n"


def chat_prompt(problem: str, template: str, system_prompt: str | None = None) -> list[dict]:
    try:
        content = template.format(problem=problem)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"prompt_template {template!r}: {e!r} is not usable; the only field is {{problem}} "
            "(write a literal brace as {{ or }})"
        ) from e
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def check_template(template: str) -> None:
    chat_prompt("", template)


def render_prompt(tokenizer, cfg, problem_text: str) -> tuple[str, list[int]]:
    messages = chat_prompt(problem_text, cfg.prompt_template, cfg.system_prompt)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text += getattr(cfg, "prompt_prefill", None) or ""
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]
