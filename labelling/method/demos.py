"""Hand-written demonstration turns that fill the prompt while the example index is still nearly empty.

They are invented (not taken from any corpus, so no gold can leak through them) and show the call
format a small model would otherwise have to guess: keyword arguments, several services in one turn,
a state reference, a deletion, and acts with and without arguments.
"""

from __future__ import annotations

from labelling.acts import Act, Entity
from labelling.states import compute_delta
from labelling.turns import Turn


def _demo(n: int, last_system: str, user: str, response: str, prior: dict, state: dict, acts: list[Act]) -> Turn:
    return Turn(
        dialogue_id=f"demo-{n}",
        turn_id=0,
        user_utterances=[user],
        system_utterances=[last_system],
        system_response=response,
        last_slot_values=prior,
        slot_values=state,
        turn_slot_values=compute_delta(prior, state),
        system_response_acts=acts,
        last_system_response_acts=[],
    )


DEMOS: tuple[Turn, ...] = (
    _demo(
        1,
        "",
        "hello , i would like a cheap place to eat that serves italian food .",
        "there are 4 cheap italian restaurants . which part of town do you prefer ?",
        {},
        {"restaurant": {"price range": "cheap", "food": "italian"}},
        [
            Act("Inform", entity=Entity("Restaurant", (("price_range", "cheap"), ("food", "italian"), ("choice", "4")))),
            Act("Request", service="restaurant", values=("area",)),
        ],
    ),
    _demo(
        2,
        "the lotus garden is a moderately priced chinese restaurant . shall i reserve a table ?",
        "yes please , for 3 people at 18:30 on friday . i also need a guesthouse in the same area .",
        "your table is booked , reference number xq7fa2lc . i found 2 guesthouses in the north ; do you need parking ?",
        {"restaurant": {"food": "chinese", "area": "north", "price range": "moderate"}},
        {
            "restaurant": {
                "food": "chinese",
                "area": "north",
                "price range": "moderate",
                "name": "lotus garden",
                "book people": "3",
                "book time": "18:30",
                "book day": "friday",
            },
            "hotel": {"type": "guesthouse", "area": "north"},
        },
        [
            Act("NotifySuccess", service="restaurant", entity=Entity("Restaurant", (("ref", "xq7fa2lc"),))),
            Act("Inform", entity=Entity("Hotel", (("type", "guesthouse"), ("area", "north"), ("choice", "2")))),
            Act("Request", service="hotel", values=("parking",)),
        ],
    ),
    _demo(
        3,
        "tr4216 leaves cambridge at 09:15 on saturday . would you like a ticket ?",
        "any day works for me actually . and forget the hotel , i will stay with friends . thanks , bye !",
        "you are welcome . have a nice trip , goodbye !",
        {"train": {"departure": "cambridge", "destination": "ely", "day": "saturday"}, "hotel": {"area": "east"}},
        {"train": {"departure": "cambridge", "destination": "ely", "day": "dontcare"}},
        [Act("ThankYou"), Act("Goodbye")],
    ),
)
