import itertools

from hypothesis import given
from hypothesis import strategies as st

from topology.routing import covers, is_pattern, matches, overlap

WORDS = ["a", "b"]
pattern_words = st.sampled_from(["a", "b", "*", "#"])
key_words = st.sampled_from(WORDS)
patterns = st.lists(pattern_words, min_size=1, max_size=5).map(".".join)
# Four words a pattern where a brute force checks: it tries 3^(words of both, + 1) keys.
short_patterns = st.lists(pattern_words, min_size=1, max_size=4).map(".".join)
keys = st.lists(key_words, min_size=1, max_size=6).map(".".join)


def reference_matches(pattern: str, key: str) -> bool:
    """Expand each '#' into every possible number of '*' words, then compare word by word."""
    words, target = pattern.split("."), key.split(".")
    hashes = [i for i, w in enumerate(words) if w == "#"]
    for counts in itertools.product(range(len(target) + 1), repeat=len(hashes)):
        expanded: list[str] = []
        for i, word in enumerate(words):
            expanded += ["*"] * counts[hashes.index(i)] if word == "#" else [word]
        if len(expanded) == len(target) and all(
            w in ("*", t) for w, t in zip(expanded, target, strict=True)
        ):
            return True
    return False


def brute_overlap(first: str, second: str) -> bool:
    words = ["a", "b", "x"]
    limit = len(first.split(".")) + len(second.split("."))
    for n in range(1, limit + 1):
        for combo in itertools.product(words, repeat=n):
            key = ".".join(combo)
            if matches(first, key) and matches(second, key):
                return True
    return False


def test_hash_matches_zero_or_more_words_as_rabbitmq_does():
    assert matches("a.#", "a")
    assert matches("#.b", "b")
    assert matches("#", "anything.at.all")
    assert matches("a.#.b", "a.b")
    assert matches("a.#.b", "a.x.y.b")
    assert not matches("a.#", "b")


def test_star_matches_exactly_one_word():
    assert matches("email.*", "email.welcome")
    assert not matches("email.*", "email")
    assert not matches("email.*", "email.a.b")
    assert matches("*.*", "a.b")


def test_exact_keys_match_only_themselves():
    assert matches("email", "email")
    assert not matches("email", "emails")


@given(patterns, keys)
def test_matches_agrees_with_a_regex_reference(pattern: str, key: str):
    assert matches(pattern, key) == reference_matches(pattern, key)


@given(short_patterns, short_patterns)
def test_overlap_finds_a_shared_key_exactly_when_one_exists(first: str, second: str):
    witness = overlap(first, second)
    assert (witness is not None) == brute_overlap(first, second)
    if witness is not None:
        assert matches(first, witness)
        assert matches(second, witness)


@given(patterns, patterns)
def test_overlap_is_symmetric(first: str, second: str):
    assert (overlap(first, second) is None) == (overlap(second, first) is None)


def test_overlap_examples():
    assert overlap("email.*", "#.welcome") == "email.welcome"
    assert overlap("email", "email.*") is None
    assert overlap("github.#", "webhook.#") is None
    assert overlap("#", "a.b") == "a.b"


def test_is_pattern_spots_wildcard_words_only():
    assert is_pattern("a.*")
    assert is_pattern("#")
    assert not is_pattern("a.b")
    assert not is_pattern("a*")


def brute_covers(general: str, specific: str) -> bool:
    words = ["a", "b", "x"]
    limit = len(general.split(".")) + len(specific.split(".")) + 1
    for n in range(1, limit + 1):
        for combo in itertools.product(words, repeat=n):
            key = ".".join(combo)
            if matches(specific, key) and not matches(general, key):
                return False
    return True


@given(short_patterns, short_patterns)
def test_covers_holds_exactly_when_no_key_of_the_specific_escapes_the_general(
    general: str, specific: str
):
    assert covers(general, specific) == brute_covers(general, specific)


def test_covers_examples():
    assert covers("github.#", "github.push")
    assert covers("github.#", "github.*.#")
    assert covers("#.*", "*.#")  # both: one word or more
    assert not covers("github.*.#", "github.#")  # "github" alone escapes
    assert not covers("taskq.#", "#")
    assert covers("#", "taskq.callback")
    assert covers("*.#", "#")  # a routing key has at least one word
