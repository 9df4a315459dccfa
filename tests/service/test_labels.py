import pytest

from ml_backend.service.label_config import ClassificationConfig
from ml_backend.service.labels import task_answer

CONFIG = ClassificationConfig("label", "image", "image", ("cat", "dog"))


def ann(choice, id_, updated, cancelled=False, from_name="label"):
    result = (
        []
        if choice is None
        else [{"from_name": from_name, "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]
    )
    return {"id": id_, "result": result, "was_cancelled": cancelled, "updated_at": updated}


@pytest.mark.parametrize(
    "annotations, expected",
    [
        ([], None),
        ([ann(None, 1, "2026-01-01", cancelled=True)], None),  # a skip is not a label
        ([ann("cat", 1, "2026-01-01", cancelled=True)], None),
        ([ann("cat", 1, "2026-01-01")], "cat"),
        ([ann("cat", 1, "2026-01-01"), ann("dog", 2, "2026-01-02"), ann("cat", 3, "2026-01-03")], "cat"),  # majority
        ([ann("cat", 1, "2026-01-01"), ann("dog", 2, "2026-01-02")], "dog"),  # tie: most recently updated
        ([ann("dog", 2, "2026-01-05"), ann("cat", 1, "2026-01-01")], "dog"),
        ([ann("cat", 1, "2026-01-01"), ann("dog", 2, "2026-01-01")], "dog"),  # same time: higher id
        ([ann("cat", 1, "2026-01-01", from_name="other")], None),  # another control
    ],
)
def test_resolution_table(annotations, expected):
    assert task_answer(annotations, CONFIG) == expected
    assert task_answer(list(reversed(annotations)), CONFIG) == expected  # order-independent
