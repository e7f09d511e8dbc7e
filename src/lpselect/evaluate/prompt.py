"""The judge's protocol in one place: the messages it is sent and how the scores are read from its reply.

The constants are the project's own wording; docs/guide.md shows them as they are.
"""

from __future__ import annotations

import re

PROMPT_VERSION = "lpselect-judge-v1"

SYSTEM_PROMPT = (
    "You are a careful, impartial reviewer of AI assistants. You read one user request and two candidate "
    "answers to it, and you grade each answer on its own merits with a number from 1 to 10."
)

USER_TEMPLATE = """\
A user sent this request:

<<<REQUEST
{question}
REQUEST>>>

Candidate answer 1:

<<<ANSWER 1
{answer_1}
ANSWER 1>>>

Candidate answer 2:

<<<ANSWER 2
{answer_2}
ANSWER 2>>>

Grade both answers for how well they serve this user: usefulness, relevance, correctness, and a level of \
detail that suits the request. Use 1 for an answer that is of no use and 10 for one that could not be \
improved. Judge substance, not length or style, and do not let the order of the two answers influence you.

Reply in this layout. Line 1: the two grades and nothing else, answer 1's grade first, separated by a \
space (for example: 7 9). From line 2 on: the reasons for your grades."""

SCORE_MIN, SCORE_MAX = 1.0, 10.0

Messages = list[dict[str, str]]


def build_messages(question: str, answer_1: str, answer_2: str) -> Messages:
    """Chat messages that show ``answer_1`` first; the caller swaps the answers for the second order."""
    user = USER_TEMPLATE.format(question=question, answer_1=answer_1, answer_2=answer_2)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# Labels and decorations a judge tends to add around the two numbers; removed before counting numbers.
_NOISE = [
    re.compile(r"\b(?:candidate\s+)?(?:answer|assistant|response)\s*[#(]?\s*[12]\)?", re.IGNORECASE),
    re.compile(r"\b(?:grades?|scores?|ratings?)\b", re.IGNORECASE),
    re.compile(r"(?:/\s*10|\bout\s+of\s+10)\b", re.IGNORECASE),
    re.compile(r"[*_#`]"),
]
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])")


def parse_scores(reply: str | None) -> tuple[float, float] | None:
    """The two grades on the reply's first non-empty line, in the order shown; else None.

    Never guesses: a line with one number, three numbers or a number outside 1..10 is unparsed.
    """
    if not reply:
        return None
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    for pattern in _NOISE:
        line = pattern.sub(" ", line)
    numbers = [float(m) for m in _NUMBER.findall(line)]
    if len(numbers) != 2 or not all(SCORE_MIN <= x <= SCORE_MAX for x in numbers):
        return None
    return numbers[0], numbers[1]
