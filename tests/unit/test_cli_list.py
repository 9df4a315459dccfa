"""``python -m ml_backend --list`` fits a terminal: grouped by family, no line over 100 characters,
each long reason printed once; ``--verbose`` has every reason in full, within the same width."""

from ml_backend.cli import WIDTH, list_text


def test_the_listing_fits_100_columns_and_prints_each_reason_once():
    text = list_text()
    lines = text.splitlines()
    assert WIDTH == 100 and max(len(line) for line in lines) <= 100
    assert len(lines) < 120
    assert text.count("the paper names a second A layer") == 1  # a note, not a sentence per family
    assert "  resnet              resnet18, resnet34, resnet50, resnet101" in text  # by family, in natural order
    assert "squeezenet" in text and "refused:" in text
    for name in ("auto", "badge", "margin", "typiclust", "adma"):
        assert f"\n  {name} " in text


def test_verbose_gives_every_reason_in_full_within_the_width():
    text = list_text(verbose=True)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "needs layer role A2" in text and "Needs: " in text
    assert " ".join(text.split()).count("the paper names a second A layer") > 5
