"""The demo/test data generator: what someone looking at the demo data would notice."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from kitap.sample_data import (
    Copy,
    NodeSpec,
    Reader,
    SampleData,
    Title,
    catalogue,
    default_nodes,
    generate,
)

KAZAKH_LETTERS = set("әғқңөұүһіӘҒҚҢӨҰҮҺІ")


def isbn13_valid(isbn: str) -> bool:
    """Independent ISBN-13 check: weights 1,3,1,3,... over all 13 digits sum to 0 mod 10."""
    if not re.fullmatch(r"\d{13}", isbn):
        return False
    return sum(int(d) * (1, 3)[i % 2] for i, d in enumerate(isbn)) % 10 == 0


@pytest.fixture(scope="module")
def demo() -> SampleData:
    return generate(default_nodes(), copies=3000, readers=300)


# -- catalogue -------------------------------------------------------------------------

def test_catalogue_has_at_least_240_titles_in_a_real_language_mix() -> None:
    titles = catalogue()
    assert len(titles) >= 240
    by_lang = Counter(t.language for t in titles)
    assert set(by_lang) == {"kk", "ru", "en"}
    for lang, n in by_lang.items():
        assert n / len(titles) >= 0.25, (lang, n)


def test_catalogue_ids_are_sequential_and_fields_well_formed() -> None:
    titles = catalogue()
    assert [t.id for t in titles] == [f"T{i:05d}" for i in range(1, len(titles) + 1)]
    for t in titles:
        assert isinstance(t, Title)
        assert t.title.strip() and t.author.strip()
        assert t.item_type in {"book", "children", "reference"}
        assert 1985 <= t.year <= 2025, t


def test_no_duplicated_title_author_pairs_and_isbns() -> None:
    titles = catalogue()
    assert len({(t.title, t.author) for t in titles}) == len(titles)
    assert len({t.isbn for t in titles}) == len(titles)


def test_every_isbn_is_a_valid_isbn13_with_the_right_prefix() -> None:
    prefixes = {"kk": ("978601",), "ru": ("9785",), "en": ("9780", "9781")}
    for t in catalogue():
        assert isbn13_valid(t.isbn), t
        assert t.isbn.startswith(prefixes[t.language]), t


def test_the_check_digit_test_itself_catches_a_bad_digit() -> None:
    isbn = catalogue()[0].isbn
    wrong = isbn[:-1] + str((int(isbn[-1]) + 1) % 10)
    assert isbn13_valid(isbn) and not isbn13_valid(wrong)
    assert isbn13_valid("9780306406157")  # a well-known valid example


def test_children_and_reference_items_are_marked() -> None:
    titles = catalogue()
    types = Counter(t.item_type for t in titles)
    assert types["children"] >= 20 and types["reference"] >= 10
    refs = [t.title.lower() for t in titles if t.item_type == "reference"]
    assert any("сөздік" in r for r in refs)
    assert any("словарь" in r for r in refs)
    assert any("dictionary" in r for r in refs)
    assert any("atlas" in r or "атлас" in r for r in refs)
    kids = {t.title for t in titles if t.item_type == "children"}
    assert {"Ер Төстік", "Маленький принц", "The Gruffalo"} <= kids


def test_well_known_titles_are_present() -> None:
    pairs = {(t.title, t.author) for t in catalogue()}
    assert ("Қара сөздер", "Абай Құнанбайұлы") in pairs
    assert ("Абай жолы", "Мұхтар Әуезов") in pairs
    assert ("Көшпенділер", "Ілияс Есенберлин") in pairs
    assert ("Мастер и Маргарита", "Михаил Булгаков") in pairs
    assert ("Pride and Prejudice", "Jane Austen") in pairs


def test_kazakh_titles_use_kazakh_specific_letters() -> None:
    kk = [t for t in catalogue() if t.language == "kk"]
    with_letters = [t for t in kk if KAZAKH_LETTERS & set(t.title)]
    assert len(with_letters) / len(kk) >= 0.6
    # and the other languages do not
    assert not any(KAZAKH_LETTERS & set(t.title) for t in catalogue() if t.language != "kk")


def test_catalogue_returns_a_fresh_list() -> None:
    first = catalogue()
    first.clear()
    assert len(catalogue()) >= 240


# -- nodes and copies --------------------------------------------------------------------

def test_default_nodes() -> None:
    assert default_nodes() == [
        NodeSpec("m-almaly", "machine", "Almaly metro station", 40),
        NodeSpec("m-mega", "machine", "MEGA Alma-Ata mall", 40),
        NodeSpec("b-central", "branch", "Central City Library (Pushkin)", 0),
    ]


def test_demo_has_the_requested_sizes(demo: SampleData) -> None:
    assert len(demo.copies) == 3000
    assert len(demo.readers) == 300
    assert demo.nodes == default_nodes()
    assert demo.titles == catalogue()


def test_every_machine_slot_holds_exactly_one_copy(demo: SampleData) -> None:
    for node in demo.nodes:
        if node.kind != "machine":
            continue
        slots = [c.slot for c in demo.copies if c.location_node == node.id]
        assert sorted(slots) == list(range(1, node.slots + 1)), node.id


def test_branch_copies_have_no_slot_and_home_is_where_placed(demo: SampleData) -> None:
    kinds = {n.id: n.kind for n in demo.nodes}
    for c in demo.copies:
        assert isinstance(c, Copy)
        assert c.home_node == c.location_node
        if kinds[c.location_node] == "branch":
            assert c.slot is None
        else:
            assert c.slot is not None
    assert sum(c.location_node == "b-central" for c in demo.copies) == 3000 - 80


def test_every_copy_refers_to_an_existing_title(demo: SampleData) -> None:
    ids = {t.id for t in demo.titles}
    assert all(c.title_id in ids for c in demo.copies)


def test_barcodes_are_unique_and_well_formed(demo: SampleData) -> None:
    barcodes = [c.barcode for c in demo.copies]
    assert len(set(barcodes)) == len(barcodes)
    assert all(re.fullmatch(r"C\d{7}", b) for b in barcodes)


def test_every_title_has_a_copy_and_popular_titles_have_many(demo: SampleData) -> None:
    per_title = Counter(c.title_id for c in demo.copies)
    assert set(per_title) == {t.id for t in demo.titles}
    counts = sorted(per_title.values(), reverse=True)
    top_decile = sum(counts[: len(counts) // 10])
    assert top_decile / len(demo.copies) > 0.2  # uniform would be 0.1
    assert counts[0] >= 4 * counts[len(counts) // 2]


def test_reference_works_stay_out_of_machines_when_possible(demo: SampleData) -> None:
    ref = {t.id for t in demo.titles if t.item_type == "reference"}
    in_machines = [c for c in demo.copies if c.slot is not None]
    assert in_machines and not any(c.title_id in ref for c in in_machines)


def test_too_few_copies_leaves_high_slots_empty_and_shares_evenly() -> None:
    data = generate(default_nodes(), copies=50, readers=0)
    assert len(data.copies) == 50
    for machine in ("m-almaly", "m-mega"):
        slots = sorted(c.slot for c in data.copies if c.location_node == machine)
        assert slots == list(range(1, 26))
    assert not any(c.location_node == "b-central" for c in data.copies)


def test_without_a_branch_leftover_copies_are_not_created() -> None:
    nodes = [NodeSpec("m-a", "machine", "A", 30), NodeSpec("m-b", "machine", "B", 12)]
    data = generate(nodes, copies=500, readers=10)
    assert len(data.copies) == 42
    for node in nodes:
        slots = sorted(c.slot for c in data.copies if c.location_node == node.id)
        assert slots == list(range(1, node.slots + 1))


def test_several_branches_all_get_shelf_copies() -> None:
    nodes = [*default_nodes(), NodeSpec("b-abai", "branch", "Abai branch", 0)]
    data = generate(nodes, copies=2000, readers=0)
    shelf = Counter(c.location_node for c in data.copies if c.slot is None)
    assert set(shelf) == {"b-central", "b-abai"}
    assert min(shelf.values()) > 500


def test_only_branches_puts_everything_on_shelves() -> None:
    data = generate([NodeSpec("b-x", "branch", "X", 0)], copies=300, readers=0)
    assert len(data.copies) == 300
    assert all(c.slot is None and c.location_node == "b-x" for c in data.copies)


@pytest.mark.parametrize(
    "nodes",
    [
        [NodeSpec("m", "machine", "M", 10), NodeSpec("m", "branch", "B", 0)],
        [NodeSpec("x", "kiosk", "X", 0)],
        [NodeSpec("b", "branch", "B", 5)],
        [NodeSpec("m", "machine", "M", -1)],
    ],
)
def test_inconsistent_nodes_are_rejected(nodes: list[NodeSpec]) -> None:
    with pytest.raises(ValueError):
        generate(nodes)


# -- readers ------------------------------------------------------------------------------

def test_reader_cards_unique_and_pins_four_digits(demo: SampleData) -> None:
    cards = [r.card for r in demo.readers]
    assert len(set(cards)) == len(cards)
    assert all(re.fullmatch(r"R\d{6}", c) for c in cards)
    assert all(isinstance(r, Reader) and re.fullmatch(r"\d{4}", r.pin) for r in demo.readers)
    assert "1234" not in {r.pin for r in demo.readers}


def test_reader_categories_are_a_plausible_mix(demo: SampleData) -> None:
    cats = Counter(r.category for r in demo.readers)
    assert set(cats) <= {"adult", "child", "student", "pensioner", "partner_staff", "supported"}
    assert cats.most_common(1)[0][0] == "adult"
    assert cats["adult"] / len(demo.readers) > 0.4
    assert {"child", "student", "pensioner"} <= set(cats)


def test_reader_names_look_like_almaty(demo: SampleData) -> None:
    names = [r.name for r in demo.readers]
    assert all(re.fullmatch(r"[А-ЯЁ][а-яё]+ [А-ЯЁ][а-яё]+", n) for n in names), names[:5]
    firsts = Counter(n.split()[0] for n in names)
    kazakh_firsts = {"Айгерим", "Нурлан", "Дана", "Асель", "Ерлан", "Арман", "Мадина", "Азамат"}
    russian_firsts = {"Елена", "Александр", "Ольга", "Сергей", "Дмитрий", "Анна", "Ирина"}
    assert sum(firsts[n] for n in kazakh_firsts) > 0
    assert sum(firsts[n] for n in russian_firsts) > 0
    assert len(set(names)) > 0.8 * len(names)


# -- determinism and speed ----------------------------------------------------------------

def test_same_seed_same_data_different_seed_different_data() -> None:
    a = generate(default_nodes(), seed=7)
    b = generate(default_nodes(), seed=7)
    c = generate(default_nodes(), seed=8)
    assert a == b
    assert a.copies != c.copies
    assert a.readers != c.readers
    assert generate(default_nodes()) == a  # seed 7 is the default


def test_generation_does_not_touch_the_global_random() -> None:
    import random

    random.seed(1)
    expected = random.random()
    random.seed(1)
    generate(default_nodes())
    assert random.random() == expected


def test_large_generation_has_every_copy_and_unique_cards() -> None:
    # Speed is measured by `make bench`, never asserted in a test.
    data = generate(default_nodes(), copies=100_000, readers=50_000)
    assert len(data.copies) == 100_000 and len(data.readers) == 50_000
    assert len({r.card for r in data.readers}) == 50_000
