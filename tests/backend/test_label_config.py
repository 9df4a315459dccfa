import pytest

from active_adaptation.errors import LabelConfigError
from active_adaptation.backend.label_config import parse_label_config

GOOD = '<View><Image name="img" value="$photo"/><Choices name="cls" toName="img"><Choice value="cat"/><Choice value="dog"/></Choices></View>'


def test_parses_image_classification():
    c = parse_label_config(GOOD)
    assert (c.from_name, c.to_name, c.value_key, c.labels) == ("cls", "img", "photo", ("cat", "dog"))


def test_finds_the_choices_that_point_at_the_image():
    cfg = ('<View><Text name="t" value="$text"/><Choices name="sent" toName="t"><Choice value="pos"/></Choices>'
           '<Image name="i" value="$image"/><Choices name="c" toName="i" choice="single"><Choice value="a"/></Choices></View>')
    assert parse_label_config(cfg).from_name == "c"


@pytest.mark.parametrize("config, message", [
    ("", "empty"),
    ("<View><Image name='x'", "not valid XML"),
    ('<View><Image name="i" value="$image"/></View>', "no <Choices> tag found"),
    ('<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>', r"no <Image> tag found \(object tags: Text\)"),
    ('<View><Image name="i" value="$image"/><Choices name="c" toName="i" choice="multiple"><Choice value="a"/></Choices></View>', "allows multiple choices"),
    ('<View><Image name="i" value="$image"/><Labels name="l" toName="i"><Label value="a"/></Labels></View>', r"no <Choices> tag found \(control tags: Labels\)"),
])
def test_unsupported_configs_say_what_is_missing_and_what_is_supported(config, message):
    with pytest.raises(LabelConfigError, match=message) as info:
        parse_label_config(config)
    assert "supports an <Image> tag and a single-choice <Choices> tag" in str(info.value)
