import pytest

from ml_backend.errors import LabelConfigError
from ml_backend.service.label_config import parse_label_config

GOOD = (
    '<View><Image name="img" value="$photo"/><Choices name="cls" toName="img">'
    '<Choice value="cat"/><Choice value="dog"/></Choices></View>'
)


def test_parses_image_classification():
    c = parse_label_config(GOOD)
    assert (c.from_name, c.to_name, c.value_key, c.labels) == ("cls", "img", "photo", ("cat", "dog"))


def test_finds_the_choices_that_point_at_the_image():
    cfg = (
        '<View><Text name="t" value="$text"/><Choices name="sent" toName="t"><Choice value="pos"/></Choices>'
        '<Image name="i" value="$image"/><Choices name="c" toName="i" choice="single">'
        '<Choice value="a"/></Choices></View>'
    )
    assert parse_label_config(cfg).from_name == "c"


@pytest.mark.parametrize(
    "config, message",
    [
        ("", "empty"),
        ("<View><Image name='x'", "not valid XML"),
        ('<View><Image name="i" value="$image"/></View>', "no <Choices> tag found"),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
            r"no <Image> tag found \(object tags: Text\)",
        ),
        (
            '<View><Image name="i" value="$image"/><Choices name="c" toName="i" choice="weird">'
            '<Choice value="a"/></Choices></View>',
            'name="c"> has choice="weird"',
        ),
        (
            '<View><Image name="i" value="$a"/><Image name="j" value="$b"/>'
            '<Choices name="c" toName="i"><Choice value="a"/></Choices>'
            '<Choices name="d" toName="j"><Choice value="a"/></Choices></View>',
            "one image per task",
        ),
        (
            '<View><Image name="i" value="$image"/><Labels name="l" toName="i"><Label value="a"/></Labels></View>',
            r"no <Choices> tag found \(control tags: Labels\)",
        ),
    ],
)
def test_unsupported_configs_say_what_is_missing_and_what_is_supported(config, message):
    with pytest.raises(LabelConfigError, match=message) as info:
        parse_label_config(config)
    assert "supports an <Image> tag and one or more <Choices> tags" in str(info.value)


MULTI = (
    '<View><Image name="img" value="$image"/>'
    '<Choices name="tags" toName="img" choice="multiple"><Choice value="red"/><Choice value="round"/></Choices>'
    '<Choices name="quality" toName="img"><Choice value="good"/><Choice value="bad"/></Choices></View>'
)


def test_several_choices_groups_and_multi_label_become_a_layout():
    c = parse_label_config(MULTI)
    assert c.from_name == "tags" and c.to_name == "img" and c.value_key == "image"
    assert c.labels == ("tags/red", "tags/round", "quality/good", "quality/bad")
    assert [(g.name, g.multiple) for g in c.layout.groups] == [("tags", True), ("quality", False)]
    assert not c.layout.simple
    again = type(c).from_dict(c.to_dict())
    assert again == c and again.fingerprint == c.fingerprint


def test_one_multi_label_group_keeps_plain_label_names():
    cfg = (
        '<View><Image name="i" value="$image"/><Choices name="c" toName="i" choice="multiple">'
        '<Choice value="a"/><Choice value="b"/></Choices></View>'
    )
    c = parse_label_config(cfg)
    assert c.labels == ("a", "b") and c.layout.groups[0].multiple and not c.layout.simple


def test_the_classic_config_keeps_its_fingerprint_and_dict():
    c = parse_label_config(GOOD)
    assert c.layout.simple and c.groups == ()
    assert c.to_dict() == {"from_name": "cls", "to_name": "img", "value_key": "photo", "labels": ["cat", "dog"]}
