import pytest

from valbench.errors import ConfigError, PluginError
from valbench.params import PluginSpec, parse_spec, resolve, split_list


def test_split_list_respects_brackets():
    assert split_list("labels[rate=0.4,x=1], features ,random") == ["labels[rate=0.4,x=1]", "features", "random"]


@pytest.mark.parametrize("bad, message", [("a,,b", "empty plugin name in list 'a,,b'"),
                                          ("a[x=1", r"unclosed '\[' in 'a\[x=1'"),
                                          ("a]x", r"unbalanced '\]' in 'a\]x'"),
                                          ("a[x=1]]", r"unbalanced '\]'")])
def test_split_list_rejects_malformed(bad, message):
    with pytest.raises(ConfigError, match=message):
        split_list(bad)


def test_parse_spec():
    assert parse_spec("labels") == PluginSpec("labels")
    assert parse_spec("labels[rate=0.4]") == PluginSpec("labels", (("rate", "0.4"),))
    assert parse_spec(" adult[n_target=3,n_source=5] ").params == (("n_source", "5"), ("n_target", "3"))


@pytest.mark.parametrize("bad, message", [
    ("labels[rate]", "malformed parameter 'rate'"), ("labels[=1]", "malformed parameter '=1'"),
    ("labels[rate=]", "malformed parameter 'rate='"), ("labels[rate=1", "malformed plugin spec"),
    ("[rate=1]", "malformed plugin spec"), ("labels[a=1,a=2]", "parameter 'a' given twice"),
    ("labels=1", "malformed plugin spec 'labels=1'")])
def test_parse_spec_rejects_malformed(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(bad)


def test_resolve_coerces_and_fills_defaults(registry):
    r = resolve(registry, "dataset", "adult[n_source=500]")
    assert dict(r.params) == {"n_source": 500, "n_target": 400, "n_test": None, "path": None}
    assert r.label == "adult[n_source=500]"
    assert resolve(registry, "dataset", "adult[n_test=none]").label == "adult"
    assert resolve(registry, "corruption", "labels[rate=0.4]").params == (("rate", 0.4),)


def test_resolve_defaults_equal_explicit(registry):
    assert resolve(registry, "corruption", "labels").params == resolve(registry, "corruption", "labels[rate=0.2]").params


@pytest.mark.parametrize("spec, message", [
    ("labels[rate=1.5]", "rate must be in (0, 1)"),
    ("labels[rate=abc]", "rate must be a number"),
    ("labels[rate=nan]", "finite"),
    ("labels[ratio=0.1]", "has no parameter 'ratio'; parameters: rate"),
])
def test_resolve_rejects_bad_parameters(registry, spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(registry, "corruption", spec)


def test_int_parameter_rejects_float_and_bool(registry):
    with pytest.raises(ConfigError, match="integer"):
        resolve(registry, "dataset", "adult[n_source=1.5]")
    with pytest.raises(ConfigError, match="integer"):
        resolve(registry, "dataset", PluginSpec("adult", (("n_source", True),)))


def test_unknown_name_suggests(registry):
    with pytest.raises(PluginError, match="unknown valuer 'randon' \\(did you mean 'random'\\?\\); registered: (.*, )?random(,|$)"):
        resolve(registry, "valuer", "randon")
