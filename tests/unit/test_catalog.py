"""Card catalog: built-in values (reference §1.5 / alveo-slr-capacities.txt), user YAML, bad input."""

import pytest
from elasticdf_partitioner.catalog import Limits, load_catalog
from elasticdf_partitioner.errors import InputError


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_builtin_cards(catalog):
    assert set(catalog.cards) >= {"u200", "u250", "u280", "u55c", "u50"}
    u250 = catalog.card("U250")
    assert u250.n_slrs == 4 and u250.slrs[0] == [375000, 750000, 1152, 320, 2880]
    assert catalog.card("u280").hbm_slr == 0 and catalog.card("u280").eth_slr == 2
    assert catalog.card("u280").cost_per_hour == 1.98 and u250.cost_per_hour == 1.65


def test_usable_capacity_matches_reference(catalog):
    limits = Limits()
    # U250 SLR0: (375000 - 33256 DDR) · 0.7 = 239220.8; BRAM (1152 - 199) · 0.8 = 762.4; DSP (2880 - 3) · 0.8
    slr0 = catalog.card("u250").usable(0, catalog.ip_costs, limits, with_eth=False)
    assert [int(v) for v in slr0] == [239220, 352555, 762, 256, 2301]
    # multi-card U250: the VNx stack on SLR3: (375000 - 33256 - 35219) · 0.7 = 214567.5; BRAM (1152-199-183)·0.8
    slr3 = catalog.card("u250").usable(3, catalog.ip_costs, limits, with_eth=True)
    assert (int(slr3.lut), int(slr3.bram18)) == (214567, 616)
    # U280 SLR0 holds HBM instead of DDR: (400800 - 10718) · 0.7 = 273057.4
    assert int(catalog.card("u280").usable(0, catalog.ip_costs, limits, with_eth=False).lut) == 273057


def test_unknown_card_lists_allowed(catalog):
    with pytest.raises(InputError) as err:
        catalog.card("u9000")
    assert "u9000" in str(err.value) and "u250" in err.value.allowed


def test_user_yaml_adds_and_overrides(tmp_path):
    extra = tmp_path / "cards.yaml"
    extra.write_text("cards:\n  u250:\n    cost_per_hour: 1.2\n  mycard:\n    part: xcvu9p\n"
                     "    slrs: [[100, 200, 10, 0, 5]]\n    eth_slr: 0\n")
    catalog = load_catalog(extra)
    assert catalog.card("u250").cost_per_hour == 1.2 and catalog.card("u250").n_slrs == 4
    assert catalog.card("mycard").n_slrs == 1


@pytest.mark.parametrize("text,needle", [
    ("cards: [unclosed\n", "malformed YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("cards:\n  bad:\n    part: x\n    slrs: [[1, 2, 3]]\n    eth_slr: 0\n", "expected 5 values"),
    ("cards:\n  bad:\n    part: x\n    slrs: [[1, 2, 3, 4, 5]]\n    eth_slr: 3\n", "eth_slr=3"),
])
def test_bad_catalog_yaml(tmp_path, text, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(InputError, match=needle):
        load_catalog(bad)
